// The pre-tokenizers' regular expressions: PCRE2 in UTF and Unicode-property mode (\p{L}, \s over
// all of Unicode), JIT-compiled, matched over valid UTF-8 left to right as JavaScript's matchAll does.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace latent::tokenizer {

class Regex {
 public:
  // Compiles `pattern` (or matches it character for character when `literal`). A pattern PCRE2
  // refuses throws latent::Error: "<context>: regex '<pattern>' rejected at offset N: <reason>".
  Regex(std::string_view pattern, bool literal, const std::string& context);

  // Replaces `matches` with the [begin, end) byte ranges of the successive matches in `text`, which
  // must be valid UTF-8. After an empty match the search resumes one character further on.
  // Safe to call from several threads at once.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> compiled_;
  std::string pattern_, context_;
};

}  // namespace latent::tokenizer

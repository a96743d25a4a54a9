// Pre-tokenization as a Hugging Face tokenizer.json describes it: the text cut into pieces by a
// sequence of Split steps (regex, behavior, invert) and a final ByteLevel step, before BPE.
#pragma once
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "regex.hpp"

namespace latent::tokenizer {

// What a Split step does with each match (the Hugging Face names; HF's semantics for all five).
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

class PreTokenizer {
 public:
  // From tokenizer.json's "pre_tokenizer": a ByteLevel, or a Sequence of Split steps ending with a
  // ByteLevel. ByteLevel's add_prefix_space prepends a space to each piece not starting with one,
  // and its use_regex splits with GPT-2's regex. Any other component, or a ByteLevel that is not
  // last (a Split after it would see byte-level text), throws latent::Error naming it.
  static PreTokenizer from_json(const nlohmann::json& config, const std::string& context);

  // GPT-2's: ByteLevel without prefix space, with its regex.
  static nlohmann::json gpt2_json();

  // Appends the non-empty pieces of `text` (valid UTF-8) to `pieces`. A piece views `text`, or a
  // string appended to `storage` when a space was prepended.
  void split(std::string_view text, std::vector<std::string_view>& pieces, std::deque<std::string>& storage) const;

 private:
  struct Step {
    std::shared_ptr<const Regex> regex;  // null: prepend a space (ByteLevel's add_prefix_space)
    SplitBehavior behavior = SplitBehavior::isolated;
    bool invert = false;
  };
  std::vector<Step> steps_;
};

}  // namespace latent::tokenizer

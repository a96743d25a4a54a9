// latent::tokenizer::Tokenizer: a Hugging Face byte-level BPE tokenizer.json (GPT-2, DeepSeek-V3,
// Llama 3, Qwen families) loaded, encoding and decoding token for token as Hugging Face does.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace latent::tokenizer {

// What encode() hands to BPE: a run of bytes, or an added token found whole in the text.
struct Piece {
  std::string_view bytes;
  int64_t added_id = -1;  // >= 0: this piece is the added token with this id
};

// Immutable once loaded; copies share it, and every method may run on many threads at once.
//
// Supported tokenizer.json components (anything else is refused with a one-line latent::Error
// naming it): model BPE (merges as "a b" or ["a", "b"], ignore_merges); pre_tokenizer ByteLevel
// (add_prefix_space, use_regex) or a Sequence of Split (Regex or String pattern, any behavior,
// invert) ending with ByteLevel; decoder ByteLevel; normalizer null or an empty Sequence;
// added_tokens without lstrip/rstrip/single_word. The post_processor is ignored: encode() adds no
// special tokens.
//
// Text is bytes. Encoding cuts it as Hugging Face does: added tokens first (leftmost, longest),
// then the pre-tokenizer on the text between them, then BPE on each piece. Hugging Face only takes
// valid UTF-8; here each maximal run of invalid bytes becomes one piece of its own (the valid text
// around it encoded as if the run were a boundary), so decode(encode(x)) == x for any bytes x
// whenever the pre-tokenizer adds no prefix space. Regex classes are PCRE2's: \s is not U+FEFF
// (nor in Unicode's White_Space, which Hugging Face's Oniguruma follows), whereas JavaScript's \s,
// and so transformers.js, includes it.
class Tokenizer {
 public:
  static Tokenizer from_file(const std::string& path);
  // `source` names the configuration in errors ("tokenizer.json: model: merge 3 names ...").
  static Tokenizer from_json(const nlohmann::json& config, const std::string& source = "tokenizer.json");
  static Tokenizer from_json_string(std::string_view text, const std::string& source = "tokenizer.json");

  std::vector<int64_t> encode(std::string_view text) const;
  // Each text encoded as by encode(), the texts spread over the thread pool.
  std::vector<std::vector<int64_t>> encode_batch(const std::vector<std::string>& texts) const;

  // The bytes of the tokens (added tokens as their content) concatenated. An id outside
  // [0, vocab_size()) or one no token has throws latent::Error naming it. Unlike Hugging Face,
  // which replaces invalid UTF-8 with U+FFFD, the bytes are returned as they are.
  std::string decode(std::span<const int64_t> ids) const;

  // 1 + the largest id of a token or added token: the rows an embedding table needs.
  int64_t vocab_size() const;
  // The id of an added token (by content) or a vocabulary token (by its tokenizer.json text).
  std::optional<int64_t> token_to_id(std::string_view token) const;

  // Appends the pieces encode() would hand to BPE. Pieces view `text` or strings in `storage`.
  void pre_tokenize(std::string_view text, std::vector<Piece>& pieces, std::deque<std::string>& storage) const;

  const nlohmann::json& to_json() const;
  // Writes to_json() to `path` atomically.
  void save(const std::string& path) const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace latent::tokenizer

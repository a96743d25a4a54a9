// The vocabulary of a GGUF file as llama.cpp's gpt2 (byte-level BPE) tokenizer reads it, from the
// 256 bytes of a byte-level model or from a tokenizer.json (docs/llama_cpp.md).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../tokenizer/tokenizer.hpp"

namespace latent::models {

// llama.cpp token types (tokenizer.ggml.token_type).
enum class GgufTokenType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

// A vocabulary as llama.cpp's gpt2 tokenizer takes it: token strings in id order, spelled as
// byte-level BPE spells them (each byte as GPT-2's printable stand-in), merges "left right" in rank
// order, and the name of a pre-tokenizer llama.cpp knows (tokenizer.ggml.pre, e.g. "default",
// "llama-bpe", "deepseek-v3"). A model whose vocab_size exceeds the token list gets "[PAD<id>]"
// tokens of type Unused, as llama.cpp's converter pads.
struct GgufVocabulary {
  std::vector<std::string> tokens;
  std::vector<GgufTokenType> token_types;  // one per token
  std::vector<std::string> merges;
  std::string pre = "default";
  std::optional<int64_t> bos_token_id, eos_token_id;
  bool add_bos_token = false;

  // The 256 byte tokens of a byte-level model, id b = byte b, no merges.
  static GgufVocabulary bytes();
  // A byte-level BPE tokenizer.json's vocabulary, merges and added tokens (special ones as Control,
  // others as UserDefined). Its pre-tokenizer must be one llama.cpp implements under a name: GPT-2's
  // ByteLevel regex ("gpt-2") or DeepSeek-V3's three Splits ("deepseek-v3"); any other, or BPE with
  // ignore_merges, which llama.cpp does not apply for those names, throws latent::Error naming it.
  static GgufVocabulary from_tokenizer(const tokenizer::Tokenizer& tokenizer);
};

// GPT-2's printable stand-in for a byte: printable Latin-1 bytes stand for themselves, the others
// map to U+0100 onwards in byte order (so a space is "Ġ"); returned as UTF-8.
std::string gpt2_byte_token(uint8_t byte);

}  // namespace latent::models

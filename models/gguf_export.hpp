// GGUF export for llama.cpp: DeepSeek-V3 as its `deepseek2` architecture and Llama as `llama`,
// with the hyperparameter keys, tensor names and layouts llama.cpp's own converter writes, and the
// vocabulary as a gpt2 (byte-level BPE) tokenizer.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../io/gguf.hpp"
#include "deepseek_v3.hpp"
#include "llama.hpp"

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
};

// GPT-2's printable stand-in for a byte: printable Latin-1 bytes stand for themselves, the others
// map to U+0100 onwards in byte order (so a space is "Ġ"); returned as UTF-8.
std::string gpt2_byte_token(uint8_t byte);

struct GgufExportOptions {
  io::GgmlType dtype = io::GgmlType::F32;  // of matrices; norms, biases and router weights stay F32
  std::optional<GgufVocabulary> vocabulary;  // nullopt: the byte-level vocabulary
  std::string name = "latent";               // general.name
};

// The GGUF contents for a model. A configuration llama.cpp cannot represent throws latent::Error in
// one line naming the feature (e.g. V2 group-limited routing by best expert, YaRN with mscale !=
// mscale_all_dim, moe_layer_freq > 1). MTP modules are left out, as llama.cpp's converter does.
io::GgufFile deepseek_v3_to_gguf(const DeepSeekV3& model, const GgufExportOptions& options = {});
io::GgufFile llama_to_gguf(const Llama& model, const GgufExportOptions& options = {});

// Loads MODEL_DIR (config.json's model_type picks DeepSeek-V3 / V2 or Llama) and writes `path`
// atomically: on any error nothing is left at `path`.
void export_gguf(const std::string& model_dir, const std::string& path, const GgufExportOptions& options = {});

}  // namespace latent::models

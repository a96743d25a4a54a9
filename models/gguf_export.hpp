// GGUF export for llama.cpp: DeepSeek-V3 as its `deepseek2` architecture and Llama as `llama`,
// with the hyperparameter keys, tensor names and layouts llama.cpp's own converter writes, and the
// vocabulary as a gpt2 (byte-level BPE) tokenizer.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "../io/gguf.hpp"
#include "gguf_vocabulary.hpp"
#include "deepseek_v3.hpp"
#include "llama.hpp"

namespace latent::models {

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

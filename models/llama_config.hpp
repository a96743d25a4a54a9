// LlamaConfig: the Hugging Face config.json of a Llama model (`model_type: "llama"`), with the
// checks that refuse models latent cannot build and the parameter count a checkpoint stores.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "quantization_config.hpp"

namespace latent::models {

struct LlamaConfig {
  // Members are named exactly as the HF config.json keys.
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0, num_attention_heads = 0,
          num_key_value_heads = 0 /* 0 or absent: num_attention_heads (no GQA) */,
          head_dim = 0 /* 0 or absent: hidden_size / num_attention_heads */, max_position_embeddings = 0;
  double rms_norm_eps = 1e-6, rope_theta = 10000.0, initializer_range = 0.02;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // biases on q/k/v/o_proj
  std::string hidden_act = "silu";
  std::string model_type = "llama";
  // How the files store the weights (FP8 E4M3 blocks), as DeepSeek-V3's config.json says it: read,
  // never written, since latent saves float32 (docs/checkpoints.md).
  std::optional<QuantizationConfig> quantization_config;

  static LlamaConfig from_json_file(const std::string& path);
  static LlamaConfig from_json_string(const std::string& text, const std::string& origin = "config.json");
  void to_json_file(const std::string& path) const;  // atomic
  std::string to_json_string() const;
  // This config with its derived defaults filled in (num_key_value_heads, head_dim); what Llama's
  // constructor builds and to_json writes. Throws when head_dim must be derived but cannot be.
  LlamaConfig resolved() const;
  // Throws latent::Error naming the offending key when the model of resolved() cannot be built.
  void validate() const;

  // Counted, never allocated: embedding, layers, final norm and (unless tied) the head.
  int64_t num_parameters() const;
};

}  // namespace latent::models

// DeepSeekV3Config: the Hugging Face config.json of DeepSeek-V3 (and V2-style variants), with the
// checks that refuse impossible models and its parameter counts.
#pragma once
#include <fmt/format.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "../nn/rotary.hpp"
#include "quantization_config.hpp"

namespace latent::models {

// How the router scores experts: sigmoid (V3) or softmax (V2).
enum class ScoringFunc { kSigmoid, kSoftmax };
// How it picks them: noaux_tc (V3: groups ranked by their top-2 biased scores, bias for selection
// only), greedy (plain top-k) or group_limited_greedy (V2: groups ranked by their best score).
enum class TopkMethod { kNoauxTc, kGreedy, kGroupLimitedGreedy };

// Their config.json spellings.
constexpr std::array<std::pair<ScoringFunc, std::string_view>, 2> names(ScoringFunc) {
  return {{{ScoringFunc::kSigmoid, "sigmoid"}, {ScoringFunc::kSoftmax, "softmax"}}};
}
constexpr std::array<std::pair<TopkMethod, std::string_view>, 3> names(TopkMethod) {
  return {{{TopkMethod::kNoauxTc, "noaux_tc"}, {TopkMethod::kGreedy, "greedy"},
           {TopkMethod::kGroupLimitedGreedy, "group_limited_greedy"}}};
}
std::string_view to_string(ScoringFunc scoring_func);
std::string_view to_string(TopkMethod topk_method);

struct DeepSeekV3Config {
  // Members are named exactly as the HF config.json keys.
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, moe_intermediate_size = 0, num_hidden_layers = 0,
          first_k_dense_replace = 0, num_attention_heads = 0, q_lora_rank = 0 /* 0 or null: plain q_proj */,
          kv_lora_rank = 0, qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0, n_routed_experts = 0,
          n_shared_experts = 0, num_experts_per_tok = 0, n_group = 1, topk_group = 1, max_position_embeddings = 0,
          num_nextn_predict_layers = 0, moe_layer_freq = 1;
  double routed_scaling_factor = 1.0, rope_theta = 10000.0, rms_norm_eps = 1e-6, aux_loss_alpha = 0.0,
         initializer_range = 0.02;
  bool norm_topk_prob = true, tie_word_embeddings = false;
  ScoringFunc scoring_func = ScoringFunc::kSigmoid;
  TopkMethod topk_method = TopkMethod::kNoauxTc;  // absent from a softmax config.json: greedy
  std::string hidden_act = "silu";
  std::string model_type = "deepseek_v3";
  std::optional<nn::YarnConfig> rope_scaling;  // {"type": "yarn", ...} or null
  // How the files a config.json came with store the weights (FP8 block scales); read, never
  // written: latent's own saves are float32.
  std::optional<QuantizationConfig> quantization_config;

  static DeepSeekV3Config from_json_file(const std::string& path);
  static DeepSeekV3Config from_json_string(const std::string& text, const std::string& origin = "config.json");
  static DeepSeekV3Config preset(const std::string& name);  // "tiny", "small", "deepseek-v3-671b"
  void to_json_file(const std::string& path) const;          // atomic
  std::string to_json_string() const;
  // Throws latent::Error naming the offending key when the model cannot be built.
  void validate() const;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const {
    return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // Counted, never allocated (docs/deepseek_v3.md, "Presets"): what a checkpoint stores for the main model —
  // parameters and gate-bias buffers, no MTP modules.
  int64_t num_parameters() const;
  int64_t num_activated_parameters() const;  // per token, embedding and head included
};

}  // namespace latent::models

// Prints the config.json spelling.
template <> struct fmt::formatter<latent::models::ScoringFunc> : fmt::formatter<std::string_view> {
  template <class Context> auto format(latent::models::ScoringFunc value, Context& context) const {
    return fmt::formatter<std::string_view>::format(latent::models::to_string(value), context);
  }
};
template <> struct fmt::formatter<latent::models::TopkMethod> : fmt::formatter<std::string_view> {
  template <class Context> auto format(latent::models::TopkMethod value, Context& context) const {
    return fmt::formatter<std::string_view>::format(latent::models::to_string(value), context);
  }
};

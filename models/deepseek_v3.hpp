// DeepSeekV3: embedding, decoder layers (MLA + dense/MoE FFN), final norm and head, multi-token
// prediction modules, the training loss with both load-balancing mechanisms, cached generation,
// and Hugging Face-layout checkpoints.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../nn/embedding.hpp"
#include "sampling.hpp"
#include "decoder_layer.hpp"
#include "deepseek_v3_config.hpp"

namespace latent::models {

class DeepSeekV3Model : public nn::Module {  // HF's "model." prefix
 public:
  DeepSeekV3Model(const DeepSeekV3Config& config, std::shared_ptr<const nn::RotaryEmbedding> rope);
  std::shared_ptr<nn::Embedding> embed_tokens;
  std::shared_ptr<nn::ModuleList> layers;  // main layers, then the MTP modules
  std::shared_ptr<nn::RMSNorm> norm;
};

class DeepSeekV3 : public nn::Module {
 public:
  explicit DeepSeekV3(const DeepSeekV3Config& config);
  static std::shared_ptr<DeepSeekV3> from_pretrained(const std::string& dir);  // config.json + *.safetensors
  void save_pretrained(const std::string& dir) const;                         // atomic files

  Tensor forward(const Tensor& input_ids);  // Int64 [B, T] -> logits [B, T, V]
  struct Losses {
    Tensor total, ce, balance, mtp;
  };
  // ids Int64 [B, T+1]: inputs ids[:, :T], targets ids[:, 1:];
  // total = ce + aux_loss_alpha * balance + mtp_lambda * mtp (MODEL.md, "Loss").
  Losses loss(const Tensor& ids, double mtp_lambda = 0.3);
  // After the optimizer step: b_i += gamma * sign(mean(load) - load_i) per MoE layer, from the loads
  // of the last loss() call.
  void update_expert_bias(double gamma);

  using GenerateOptions = models::GenerateOptions;
  Tensor generate(const Tensor& prompt_ids, const GenerateOptions& options);  // Int64 [T0] -> [T0 + new]
  // Streams each new token to on_token as it is produced (return false to stop early).
  Tensor generate(const Tensor& prompt_ids, const GenerateOptions& options,
                  const std::function<bool(int64_t token)>& on_token);

  // Absorbed-cache decoding: logits [B, T, V] for ids that follow what the caches hold.
  std::vector<LatentCache> make_caches(int64_t batch, int64_t capacity) const;
  Tensor forward_absorbed(const Tensor& ids, std::vector<LatentCache>& caches);

  // Routing of every MoE layer (MTP layers included) in the last loss() call.
  struct LayerRouting {
    std::string name;  // e.g. "model.layers.1.mlp"
    Tensor expert_ids, loads;
  };
  const std::vector<LayerRouting>& last_routing() const { return last_routing_; }
  std::vector<std::pair<std::string, std::shared_ptr<DeepSeekMoE>>> moe_layers() const;

  const DeepSeekV3Config& config() const { return config_; }
  std::shared_ptr<DeepSeekV3Model> model;
  std::shared_ptr<nn::Linear> lm_head;  // null when tie_word_embeddings (the embedding is the head)

 private:
  void check_ids(const Tensor& ids, const char* op, int64_t max_length) const;
  Tensor head(const Tensor& h) const;
  Tensor hidden_states(const Tensor& input_ids);  // after the final norm

  DeepSeekV3Config config_;
  std::vector<LayerRouting> last_routing_;
};

}  // namespace latent::models

// DeepSeekV3: embedding, decoder layers (MLA + dense/MoE FFN), final norm and head, multi-token
// prediction modules, the training loss with both load-balancing mechanisms, cached generation,
// and Hugging Face-layout checkpoints.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "../nn/embedding.hpp"
#include "causal_lm.hpp"
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

class DeepSeekV3 : public CausalLM {
 public:
  explicit DeepSeekV3(const DeepSeekV3Config& config);
  // config.json + model.safetensors, or the shards model.safetensors.index.json lists; tensors F32,
  // F64, BF16, F16, or F8_E4M3 with "<name>_scale_inv" block scales (config.json's quantization_config),
  // all converted to the model's float32, streamed into it one tensor at a time after every header
  // is checked (models/model_files.hpp, docs/checkpoints.md).
  static std::shared_ptr<DeepSeekV3> from_pretrained(const std::string& dir);
  using CausalLM::save_pretrained;
  void save_pretrained(const std::string& dir, const SaveOptions& options) const override;  // atomic files
  // What its checkpoints hold beyond state_dict(): each MTP module's copies of the embedding and
  // head. With load_checkpoint, loads a directory into an existing model (of any dtype).
  CheckpointLayout checkpoint_layout() const;
  void config_to_json_file(const std::string& path) const override { config_.to_json_file(path); }

  std::string model_type() const override { return config_.model_type; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_position_embeddings() const override { return config_.max_position_embeddings; }

  Tensor forward(const Tensor& input_ids) override;  // Int64 [B, T] -> logits [B, T, V]
  struct Losses {
    Tensor total, ce, balance, mtp;
  };
  // ids Int64 [B, T+1]: inputs ids[:, :T], targets ids[:, 1:];
  // total = ce + aux_loss_alpha * balance + mtp_lambda * mtp (docs/deepseek_v3.md, "Loss").
  Losses loss(const Tensor& ids, double mtp_lambda = 0.3);
  // loss() as named terms: "ce", "balance", "mtp".
  LossTerms loss_terms(const Tensor& ids, const LossOptions& options = {}) override;
  // After the optimizer step: b_i += gamma * sign(mean(load) - load_i) per MoE layer, from the loads
  // of the last loss() call.
  void update_expert_bias(double gamma);
  void after_optimizer_step(double bias_gamma) override { update_expert_bias(bias_gamma); }
  std::vector<RoutingStatistics> routing_statistics() const override;

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

 protected:
  DecodeStep start_decoding(int64_t capacity) override;  // absorbed MLA latent caches

 private:
  Tensor head(const Tensor& h) const;
  Tensor hidden_states(const Tensor& input_ids);  // after the final norm

  DeepSeekV3Config config_;
  std::vector<LayerRouting> last_routing_;
};

}  // namespace latent::models

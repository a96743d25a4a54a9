// CausalLM: the interface every model of the zoo implements (forward, loss with named terms, the one
// generation loop, checkpoints, routing statistics), and the dispatch on config.json's model_type.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.hpp"
#include "../nn/module.hpp"
#include "model_files.hpp"
#include "sampling.hpp"

namespace latent::models {

// The training objective of one loss() call: `total` is what backward runs on; `terms` are its named
// parts in a fixed order, "ce" (next-token cross-entropy, mean over tokens) always first, then the
// model's own ("balance", "mtp" for DeepSeek-V3). All are 0-dim tensors of the model's dtype.
struct LossTerms {
  Tensor total;
  std::vector<std::pair<std::string, Tensor>> terms;
  const Tensor& term(const std::string& name) const;  // throws latent::Error for an unknown name
};

struct LossOptions {
  double mtp_lambda = 0.3;  // weights the models' extra terms; a model without them ignores it
};

// Per MoE layer, what the last loss() routed (empty for dense models).
struct RoutingStatistics {
  std::string layer;  // "model.layers.1.mlp"
  // [E] assignments per expert over the batch: the very tensor after_optimizer_step() reads, so
  // all-reducing it in place before that call makes the bias update global.
  Tensor loads;
  Tensor correction_bias;  // [E] e_score_correction_bias (undefined where the layer has none)
};

class CausalLM : public nn::Module {
 public:
  using GenerateOptions = models::GenerateOptions;

  virtual std::string model_type() const = 0;  // config.json "model_type": "deepseek_v3", "llama", ...
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_position_embeddings() const = 0;

  virtual Tensor forward(const Tensor& input_ids) = 0;  // Int64 [B, T] -> logits [B, T, V]
  // forward inside the model's ForwardScope (nn/module.hpp); CausalLM's forward is virtual, so the
  // call operator is written here rather than inherited from nn::Callable.
  Tensor operator()(const Tensor& input_ids) {
    nn::ForwardScope scope(*this);
    return forward(input_ids);
  }
  // ids Int64 [B, T+1]: inputs ids[:, :T], targets ids[:, 1:].
  virtual LossTerms loss_terms(const Tensor& ids, const LossOptions& options = {}) = 0;
  // What the model updates outside the gradient after each optimizer step (DeepSeek-V3: the expert
  // biases, from the loads of the last loss_terms() call). gamma is the bias update speed.
  virtual void after_optimizer_step(double bias_gamma);
  virtual std::vector<RoutingStatistics> routing_statistics() const;

  // config.json + model.safetensors (or, with options.max_shard_bytes, shards and their index), each
  // file atomic; weight files an earlier save left in `dir` are replaced or removed (model_files.hpp).
  void save_pretrained(const std::string& dir) const { save_pretrained(dir, SaveOptions{}); }
  virtual void save_pretrained(const std::string& dir, const SaveOptions& options) const = 0;
  virtual void config_to_json_file(const std::string& path) const = 0;

  // The one generation loop, shared by every model: Int64 [T0] -> [T0 + new]; temperature 0 is
  // greedy. Streams each new token to on_token as it is produced (return false to stop early).
  Tensor generate(const Tensor& prompt_ids, const GenerateOptions& options,
                  const std::function<bool(int64_t token)>& on_token = {});

 protected:
  // One generation's decoding: caches for `capacity` positions, owned by the returned step, which
  // feeds ids Int64 [1, T] following the cached ones and returns their logits [1, T, V].
  using DecodeStep = std::function<Tensor(const Tensor& ids)>;
  virtual DecodeStep start_decoding(int64_t capacity) = 0;

  // The checks every entry point runs on token ids: Int64 [B, L] with 1 <= L <= max_length, every id
  // in [0, vocab_size). `op` names the caller in the error.
  void check_ids(const Tensor& ids, const std::string& op, int64_t max_length) const;
};

// The model a directory holds, by config.json's "model_type" ("deepseek_v3", "deepseek_v2" or "llama").
std::shared_ptr<CausalLM> from_pretrained(const std::string& dir);
// A fresh, initialised model from a config.json file (same dispatch).
std::shared_ptr<CausalLM> from_config_file(const std::string& config_json);
// The parameters a config.json's model stores, counted without building it (same dispatch).
int64_t num_parameters_of_config_file(const std::string& config_json);

}  // namespace latent::models

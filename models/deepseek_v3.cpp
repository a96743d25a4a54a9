// DeepSeekV3 forward, loss, balancing, generation and checkpoints.
#include "deepseek_v3.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "../autograd/grad_mode.hpp"
#include "../autograd/ops.hpp"
#include "../core/factory.hpp"
#include "../core/random.hpp"
#include "../nn/init.hpp"
#include "model_files.hpp"
#include "sampling.hpp"

namespace latent::models {
namespace fs = std::filesystem;

namespace {

std::shared_ptr<const nn::RotaryEmbedding> make_rope(const DeepSeekV3Config& c) {
  return std::make_shared<nn::RotaryEmbedding>(c.qk_rope_head_dim, c.max_position_embeddings, c.rope_theta, c.rope_scaling);
}

std::string layer_prefix(int64_t index) { return "model.layers." + std::to_string(index) + "."; }

}  // namespace

DeepSeekV3Model::DeepSeekV3Model(const DeepSeekV3Config& c, std::shared_ptr<const nn::RotaryEmbedding> rope) {
  embed_tokens = register_module("embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size));
  nn::init::normal_(embed_tokens->weight, 0.0, c.initializer_range);
  layers = register_module("layers", std::make_shared<nn::ModuleList>());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) layers->push_back(std::make_shared<DecoderLayer>(c, c.is_moe_layer(l), rope));
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) layers->push_back(std::make_shared<MTPLayer>(c, rope));
  norm = register_module("norm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

DeepSeekV3::DeepSeekV3(const DeepSeekV3Config& config) : config_(config) {
  config_.validate();
  model = register_module("model", std::make_shared<DeepSeekV3Model>(config_, make_rope(config_)));
  if (!config_.tie_word_embeddings) {
    lm_head = register_module("lm_head", std::make_shared<nn::Linear>(config_.hidden_size, config_.vocab_size, false));
    nn::init::normal_(lm_head->weight, 0.0, config_.initializer_range);
  }
}

Tensor DeepSeekV3::head(const Tensor& h) const {
  return lm_head ? (*lm_head)(h) : linear(h, model->embed_tokens->weight);
}

Tensor DeepSeekV3::hidden_states(const Tensor& input_ids) {
  Tensor h = (*model->embed_tokens)(input_ids);
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) h = (*model->layers->at<DecoderLayer>(static_cast<size_t>(l)))(h);
  return (*model->norm)(h);
}

Tensor DeepSeekV3::forward(const Tensor& input_ids) {
  check_ids(input_ids, "DeepSeekV3::forward", config_.max_position_embeddings);
  return head(hidden_states(input_ids));
}

DeepSeekV3::Losses DeepSeekV3::loss(const Tensor& ids, double mtp_lambda) {
  nn::ForwardScope scope(*this);
  check_ids(ids, "DeepSeekV3::loss", config_.max_position_embeddings + 1);
  const int64_t B = ids.size(0), T = ids.size(1) - 1, V = config_.vocab_size, D = config_.num_nextn_predict_layers;
  if (T <= D)
    fail("DeepSeekV3::loss: ids [{}, {}] too short for {} multi-token prediction modules (need more than {} tokens)", B,
        T + 1, D, D + 1);
  auto next_token_loss = [&](const Tensor& logits, int64_t first, int64_t length) {
    return cross_entropy(reshape(logits, {B * length, V}), reshape(contiguous(narrow(ids, 1, first, length)), {B * length}));
  };
  Losses out;
  const Tensor h_main = hidden_states(narrow(ids, 1, 0, T));
  out.ce = next_token_loss(head(h_main), 1, T);

  // MTP module k sees positions j < T - k: embedding of token j+k, h_{k-1}[j]; predicts token j+k+1.
  Tensor previous = h_main;
  std::vector<Tensor> mtp_losses;
  for (int64_t k = 1; k <= D; ++k) {
    const int64_t length = T - k;
    auto mtp = model->layers->at<MTPLayer>(static_cast<size_t>(config_.num_hidden_layers + k - 1));
    const Tensor h = (*mtp)((*model->embed_tokens)(narrow(ids, 1, k, length)), narrow(previous, 1, 0, length));
    mtp_losses.push_back(next_token_loss(head((*mtp->shared_head->norm)(h)), k + 1, length));
    previous = h;
  }
  out.mtp = mtp_losses.empty() ? zeros({}, h_main.dtype()) : mean(stack(mtp_losses, 0));

  last_routing_.clear();
  std::vector<Tensor> balances;
  for (auto& [name, moe] : moe_layers()) {
    balances.push_back(moe->last_stats().balance);
    last_routing_.push_back({name, moe->last_stats().expert_ids, moe->last_stats().loads});
  }
  out.balance = balances.empty() ? zeros({}, h_main.dtype()) : sum(stack(balances, 0));
  out.total = out.ce + out.balance * config_.aux_loss_alpha + out.mtp * mtp_lambda;
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<DeepSeekMoE>>> DeepSeekV3::moe_layers() const {
  std::vector<std::pair<std::string, std::shared_ptr<DeepSeekMoE>>> out;
  for (size_t l = 0; l < model->layers->size(); ++l) {
    auto layer = model->layers->at<DecoderLayer>(l);
    if (layer->moe) out.emplace_back(layer_prefix(static_cast<int64_t>(l)) + "mlp", layer->moe);
  }
  return out;
}

LossTerms DeepSeekV3::loss_terms(const Tensor& ids, const LossOptions& options) {
  Losses losses = loss(ids, options.mtp_lambda);
  return {losses.total, {{"ce", losses.ce}, {"balance", losses.balance}, {"mtp", losses.mtp}}};
}

std::vector<RoutingStatistics> DeepSeekV3::routing_statistics() const {
  std::vector<RoutingStatistics> out;
  const auto layers = moe_layers();
  for (size_t i = 0; i < last_routing_.size() && i < layers.size(); ++i)
    out.push_back({last_routing_[i].name, last_routing_[i].loads, layers[i].second->gate->e_score_correction_bias});
  return out;
}

void DeepSeekV3::update_expert_bias(double gamma) {
  if (last_routing_.empty()) fail("update_expert_bias: call loss() first; its expert loads drive the update");
  const auto layers = moe_layers();
  for (size_t i = 0; i < layers.size(); ++i) layers[i].second->update_expert_bias(gamma, last_routing_[i].loads);
}

std::vector<LatentCache> DeepSeekV3::make_caches(int64_t batch, int64_t capacity) const {
  if (capacity > config_.max_position_embeddings)
    fail("make_caches: capacity {} exceeds max_position_embeddings {}", capacity, config_.max_position_embeddings);
  std::vector<LatentCache> caches;
  const DType dtype = model->embed_tokens->weight.dtype();
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) caches.emplace_back(batch, capacity, config_, dtype);
  return caches;
}

Tensor DeepSeekV3::forward_absorbed(const Tensor& ids, std::vector<LatentCache>& caches) {
  nn::ForwardScope scope(*this);
  if (static_cast<int64_t>(caches.size()) != config_.num_hidden_layers)
    fail("forward_absorbed: {} caches for {} layers", caches.size(), config_.num_hidden_layers);
  check_ids(ids, "DeepSeekV3::forward_absorbed", caches.empty() ? 0 : caches[0].capacity() - caches[0].length);
  NoGradGuard no_grad;
  Tensor h = (*model->embed_tokens)(ids);
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l)
    h = model->layers->at<DecoderLayer>(static_cast<size_t>(l))->forward_absorbed(h, caches[static_cast<size_t>(l)]);
  return head((*model->norm)(h));
}

CausalLM::DecodeStep DeepSeekV3::start_decoding(int64_t capacity) {
  return [this, caches = make_caches(1, capacity)](const Tensor& ids) mutable { return forward_absorbed(ids, caches); };
}

std::shared_ptr<DeepSeekV3> DeepSeekV3::from_pretrained(const std::string& dir) {
  return load_pretrained<DeepSeekV3, DeepSeekV3Config>(dir, "from_pretrained");
}

// Published checkpoints store each MTP module's embedding and head (MODEL.md), which are the main
// model's: written on saving, and on loading compared with the main ones instead of loaded.
CheckpointLayout DeepSeekV3::checkpoint_layout() const {
  const DeepSeekV3Config& c = config_;
  const std::string embed = "model.embed_tokens.weight", head = c.tie_word_embeddings ? embed : "lm_head.weight";
  CheckpointLayout layout;
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const std::string prefix = layer_prefix(c.num_hidden_layers + k);
    layout.duplicates[prefix + "embed_tokens.weight"] = {embed, "the MTP module must share them"};
    layout.duplicates[prefix + "shared_head.head.weight"] = {head, "the MTP module must share them"};
  }
  return layout;
}

void DeepSeekV3::save_pretrained(const std::string& dir, const SaveOptions& options) const {
  fs::create_directories(dir);
  config_.to_json_file((fs::path(dir) / "config.json").string());
  std::map<std::string, Tensor> state = state_dict();
  for (const auto& [copy, duplicate] : checkpoint_layout().duplicates) state[copy] = state.at(duplicate.of);
  save_model_tensors(dir, state, options);
}

}  // namespace latent::models

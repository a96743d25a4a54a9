// Llama forward, loss, cached generation and HF-layout checkpoints.
#include "llama.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "../autograd/grad_mode.hpp"
#include "../autograd/ops.hpp"
#include "../core/factory.hpp"
#include "../core/random.hpp"
#include "../core/strided.hpp"
#include "../nn/init.hpp"
#include "model_files.hpp"
#include "sampling.hpp"

namespace latent::models {
namespace fs = std::filesystem;

namespace {

nn::CausalSelfAttentionOptions attention_options(const LlamaConfig& c) {
  nn::CausalSelfAttentionOptions o;
  o.head_dim = c.head_dim;
  o.max_position_embeddings = c.max_position_embeddings;
  o.rope_theta = c.rope_theta;
  o.bias = c.attention_bias;
  return o;
}

std::string layer_prefix(int64_t index) { return "model.layers." + std::to_string(index) + "."; }

// Rotate_half order splits a head's rows as [2, D/2] (first halves, then second halves), adjacent
// order as [D/2, 2] (pairs side by side): each order is the other's transpose (dims 1 and 2).
Shape head_rows(int64_t num_heads, int64_t head_dim, int64_t columns, bool rotate_half_order) {
  return rotate_half_order ? Shape{num_heads, 2, head_dim / 2, columns} : Shape{num_heads, head_dim / 2, 2, columns};
}

Tensor reorder_rope_rows(const Tensor& weight, int64_t num_heads, int64_t head_dim, bool to_adjacent, const char* op) {
  if (num_heads <= 0 || head_dim <= 0 || head_dim % 2 != 0)
    fail("{}: num_heads {} and head_dim {} must be positive, head_dim even", op, num_heads, head_dim);
  if (!weight.defined() || weight.dim() < 1 || weight.size(0) != num_heads * head_dim)
    fail("{}: expected {} heads x {} rows, got {}", op, num_heads, head_dim,
        (weight.defined() ? shape_str(weight.shape()) : std::string("an undefined tensor")));
  const Shape split = head_rows(num_heads, head_dim, weight.numel() / weight.size(0), to_adjacent);
  return reshape(contiguous(transpose(reshape(weight, split), 1, 2)), weight.shape());
}

// The q_proj / k_proj tensors of every layer (the ones RoPE rotates), with their head counts.
std::vector<std::pair<std::string, int64_t>> rope_rotated_tensors(const LlamaConfig& c) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string attention = layer_prefix(l) + "self_attn.";
    for (const auto& [projection, heads] :
         {std::pair{"q_proj.", c.num_attention_heads}, std::pair{"k_proj.", c.num_key_value_heads}}) {
      out.emplace_back(attention + projection + "weight", heads);
      if (c.attention_bias) out.emplace_back(attention + projection + "bias", heads);
    }
  }
  return out;
}

}  // namespace

Tensor rotate_half_rows_to_adjacent(const Tensor& weight, int64_t num_heads, int64_t head_dim) {
  return reorder_rope_rows(weight, num_heads, head_dim, true, "rotate_half_rows_to_adjacent");
}

Tensor adjacent_rows_to_rotate_half(const Tensor& weight, int64_t num_heads, int64_t head_dim) {
  return reorder_rope_rows(weight, num_heads, head_dim, false, "adjacent_rows_to_rotate_half");
}

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c) {
  self_attn = register_module("self_attn", std::make_shared<nn::CausalSelfAttention>(
                                               c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                                               attention_options(c)));
  mlp = register_module("mlp", std::make_shared<nn::SwiGLU>(c.hidden_size, c.intermediate_size));
  input_layernorm = register_module("input_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

Tensor LlamaDecoderLayer::forward(const Tensor& h, nn::KVCache* cache) const {
  const Tensor x = h + (*self_attn)((*input_layernorm)(h), cache);
  return x + (*mlp)((*post_attention_layernorm)(x));
}

LlamaModel::LlamaModel(const LlamaConfig& c) {
  embed_tokens = register_module("embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<nn::ModuleList>());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) layers->push_back(std::make_shared<LlamaDecoderLayer>(c));
  norm = register_module("norm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

Llama::Llama(const LlamaConfig& config) : config_(config.resolved()) {
  config_.validate();
  model = register_module("model", std::make_shared<LlamaModel>(config_));
  if (!config_.tie_word_embeddings)
    lm_head = register_module("lm_head", std::make_shared<nn::Linear>(config_.hidden_size, config_.vocab_size, false));
  // transformers' _init_weights: every matrix N(0, initializer_range^2), biases 0; norms stay 1.
  const double range = config_.initializer_range;
  auto init_linear = [range](const std::shared_ptr<nn::Linear>& linear) {
    nn::init::normal_(linear->weight, 0.0, range);
    if (linear->bias.defined()) nn::init::zeros_(linear->bias);
  };
  nn::init::normal_(model->embed_tokens->weight, 0.0, range);
  for (size_t l = 0; l < model->layers->size(); ++l) {
    const auto layer = model->layers->at<LlamaDecoderLayer>(l);
    const auto& attention = layer->self_attn;
    for (const auto& linear : {attention->q_proj, attention->k_proj, attention->v_proj, attention->o_proj,
                               layer->mlp->gate_proj, layer->mlp->up_proj, layer->mlp->down_proj})
      init_linear(linear);
  }
  if (lm_head) init_linear(lm_head);
}

Tensor Llama::head(const Tensor& h) const {
  const Tensor normed = (*model->norm)(h);
  return lm_head ? (*lm_head)(normed) : linear(normed, model->embed_tokens->weight);
}

Tensor Llama::logits(const Tensor& input_ids) {
  nn::ForwardScope scope(*this);
  Tensor h = (*model->embed_tokens)(input_ids);
  for (size_t l = 0; l < model->layers->size(); ++l) h = (*model->layers->at<LlamaDecoderLayer>(l))(h);
  return head(h);
}

Tensor Llama::forward(const Tensor& input_ids) {
  check_ids(input_ids, "Llama::forward", config_.max_position_embeddings);
  return logits(input_ids);
}

std::vector<nn::KVCache> Llama::make_caches(int64_t capacity) const {
  if (capacity <= 0 || capacity > config_.max_position_embeddings)
    fail("Llama::make_caches: capacity {} outside [1, max_position_embeddings {}]", capacity,
        config_.max_position_embeddings);
  std::vector<nn::KVCache> caches;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) caches.emplace_back(capacity);
  return caches;
}

Tensor Llama::forward(const Tensor& input_ids, std::vector<nn::KVCache>& caches) {
  if (static_cast<int64_t>(caches.size()) != config_.num_hidden_layers)
    fail("Llama::forward: {} KV caches for {} layers (use make_caches)", caches.size(), config_.num_hidden_layers);
  check_ids(input_ids, "Llama::forward (KV cache)", caches[0].capacity() - caches[0].length());
  nn::ForwardScope scope(*this);
  NoGradGuard no_grad;
  Tensor h = (*model->embed_tokens)(input_ids);
  for (size_t l = 0; l < model->layers->size(); ++l) h = (*model->layers->at<LlamaDecoderLayer>(l))(h, &caches[l]);
  return head(h);
}

Tensor Llama::loss(const Tensor& ids) { return loss(ids, ids); }

Tensor Llama::loss(const Tensor& ids, const Tensor& labels) {
  nn::ForwardScope scope(*this);
  check_ids(ids, "Llama::loss", config_.max_position_embeddings + 1);
  if (ids.size(1) < 2)
    fail("Llama::loss: ids {} hold no (input, target) pair; need [B, T+1], T >= 1", shape_str(ids.shape()));
  if (labels.dtype() != kInt64 || labels.shape() != ids.shape())
    fail("Llama::loss: labels must be int64 of the ids' shape {}, got {} {}", shape_str(ids.shape()),
        dtype_name(labels.dtype()), shape_str(labels.shape()));
  for (int64_t label : labels.to_vector<int64_t>())
    if (label != -100 && (label < 0 || label >= config_.vocab_size))
      fail("Llama::loss: label {} out of range [0, {}) and not -100 (ignored)", label, config_.vocab_size);
  const int64_t B = ids.size(0), T = ids.size(1) - 1, V = config_.vocab_size;
  return cross_entropy(reshape(logits(narrow(ids, 1, 0, T)), {B * T, V}),
                       reshape(contiguous(narrow(labels, 1, 1, T)), {B * T}));
}

LossTerms Llama::loss_terms(const Tensor& ids, const LossOptions&) {
  const Tensor ce = loss(ids);
  return {ce, {{"ce", ce}}};
}

CausalLM::DecodeStep Llama::start_decoding(int64_t capacity) {
  return [this, caches = make_caches(capacity)](const Tensor& ids) mutable { return forward(ids, caches); };
}

std::map<std::string, Tensor> Llama::hf_state_dict() const {
  std::map<std::string, Tensor> state = state_dict();
  for (auto& [name, t] : state) t = t.detach();
  for (const auto& [name, heads] : rope_rotated_tensors(config_))
    state[name] = adjacent_rows_to_rotate_half(state.at(name), heads, config_.head_dim);
  return state;
}

void Llama::load_hf_state_dict(const std::map<std::string, Tensor>& hf_state) {
  load_checkpoint(*this, StateDictTensors(hf_state), checkpoint_layout(), "Llama::load_hf_state_dict");
}

std::shared_ptr<Llama> Llama::from_pretrained(const std::string& dir) {
  return load_pretrained<Llama, LlamaConfig>(dir, "Llama::from_pretrained");
}

// The checkpoint's differences from state_dict(): q/k rows in rotate_half order, written into the
// parameters in adjacent order without an intermediate copy; a tied head some exporters store.
CheckpointLayout Llama::checkpoint_layout() const {
  const LlamaConfig& c = config_;
  CheckpointLayout layout;
  for (const auto& [name, heads] : rope_rotated_tensors(c))
    layout.converters[name] = [heads = heads, head_dim = c.head_dim](const Tensor& stored, const Tensor& state) {
      const int64_t columns = state.numel() / state.size(0);
      copy_into(state.view(head_rows(heads, head_dim, columns, false)),
                stored.reshape(head_rows(heads, head_dim, columns, true)).transpose(1, 2));
    };
  if (c.tie_word_embeddings)
    layout.duplicates["lm_head.weight"] = {"model.embed_tokens.weight",
                                           "tie_word_embeddings makes the head the embedding"};
  return layout;
}

void Llama::save_pretrained(const std::string& dir, const SaveOptions& options) const {
  fs::create_directories(dir);
  config_.to_json_file((fs::path(dir) / "config.json").string());
  save_model_tensors(dir, hf_state_dict(), options);
}

}  // namespace latent::models

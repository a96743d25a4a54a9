// DeepSeek-V3 decoder layer and MTP module.
#include "decoder_layer.hpp"

#include "../autograd/ops.hpp"
#include "../nn/init.hpp"

namespace latent::models {
namespace {
std::shared_ptr<nn::SwiGLU> swiglu(int64_t hidden, int64_t width, double std) {
  auto m = std::make_shared<nn::SwiGLU>(hidden, width);
  for (auto& p : m->parameters()) nn::init::normal_(p, 0.0, std);
  return m;
}
}  // namespace

DecoderLayer::DecoderLayer(const DeepSeekV3Config& c, bool is_moe, std::shared_ptr<const nn::RotaryEmbedding> rope) {
  input_layernorm = register_module("input_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
  self_attn = register_module("self_attn", std::make_shared<MultiHeadLatentAttention>(c, std::move(rope)));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
  if (is_moe) {
    moe = register_module("mlp", std::make_shared<DeepSeekMoE>(c));
    for (auto& [name, p] : moe->named_parameters()) nn::init::normal_(p, 0.0, c.initializer_range);
  } else {
    dense_mlp = register_module("mlp", swiglu(c.hidden_size, c.intermediate_size, c.initializer_range));
  }
}

Tensor DecoderLayer::feed_forward(const Tensor& h, bool routing_statistics) {
  const Tensor x = (*post_attention_layernorm)(h);
  if (!moe) return h + (*dense_mlp)(x);
  return h + (routing_statistics ? (*moe)(x) : moe->forward_without_statistics(x));
}

Tensor DecoderLayer::forward(const Tensor& h) {
  return feed_forward(h + (*self_attn)((*input_layernorm)(h)), true);
}

Tensor DecoderLayer::forward_absorbed(const Tensor& h, LatentCache& cache) {
  nn::ForwardScope scope(*this);
  return feed_forward(h + self_attn->forward_absorbed((*input_layernorm)(h), cache), false);
}

MTPLayer::SharedHead::SharedHead(const DeepSeekV3Config& c) {
  norm = register_module("norm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

MTPLayer::MTPLayer(const DeepSeekV3Config& c, std::shared_ptr<const nn::RotaryEmbedding> rope)
    : DecoderLayer(c, true, std::move(rope)) {
  enorm = register_module("enorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
  hnorm = register_module("hnorm", std::make_shared<nn::RMSNorm>(c.hidden_size, c.rms_norm_eps));
  eh_proj = register_module("eh_proj", std::make_shared<nn::Linear>(2 * c.hidden_size, c.hidden_size, false));
  nn::init::normal_(eh_proj->weight, 0.0, c.initializer_range);
  shared_head = register_module("shared_head", std::make_shared<SharedHead>(c));
}

Tensor MTPLayer::forward(const Tensor& embedded, const Tensor& previous) {
  const Tensor x = (*eh_proj)(cat({(*enorm)(embedded), (*hnorm)(previous)}, -1));
  return DecoderLayer::forward(x);
}

}  // namespace latent::models

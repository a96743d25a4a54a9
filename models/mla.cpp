// MLA: training form and absorbed decoding form.
#include "mla.hpp"

#include <cmath>
#include <string>

#include "../autograd/ops.hpp"
#include "../core/factory.hpp"
#include "../core/gemm.hpp"
#include "../nn/init.hpp"

namespace latent::models {
namespace {

std::shared_ptr<nn::Linear> projection(int64_t in, int64_t out, double std) {
  auto l = std::make_shared<nn::Linear>(in, out, false);
  nn::init::normal_(l->weight, 0.0, std);
  return l;
}

}  // namespace

LatentCache::LatentCache(int64_t batch, int64_t capacity, const DeepSeekV3Config& c, DType dtype)
    : rows(zeros({batch, capacity, c.kv_lora_rank + c.qk_rope_head_dim}, dtype)) {}

MultiHeadLatentAttention::MultiHeadLatentAttention(const DeepSeekV3Config& c, std::shared_ptr<const nn::RotaryEmbedding> rope)
    : heads_(c.num_attention_heads),
      nope_dim_(c.qk_nope_head_dim),
      rope_dim_(c.qk_rope_head_dim),
      v_dim_(c.v_head_dim),
      kv_rank_(c.kv_lora_rank),
      rope_(std::move(rope)) {
  const double std = c.initializer_range;
  const int64_t d = c.hidden_size;
  if (c.q_lora_rank > 0) {
    q_a_proj = register_module("q_a_proj", projection(d, c.q_lora_rank, std));
    q_a_layernorm = register_module("q_a_layernorm", std::make_shared<nn::RMSNorm>(c.q_lora_rank, c.rms_norm_eps));
    q_b_proj = register_module("q_b_proj", projection(c.q_lora_rank, heads_ * c.qk_head_dim(), std));
  } else {
    q_proj = register_module("q_proj", projection(d, heads_ * c.qk_head_dim(), std));
  }
  kv_a_proj_with_mqa = register_module("kv_a_proj_with_mqa", projection(d, kv_rank_ + rope_dim_, std));
  kv_a_layernorm = register_module("kv_a_layernorm", std::make_shared<nn::RMSNorm>(kv_rank_, c.rms_norm_eps));
  kv_b_proj = register_module("kv_b_proj", projection(kv_rank_, heads_ * (nope_dim_ + v_dim_), std));
  o_proj = register_module("o_proj", projection(heads_ * v_dim_, d, std));
  // YaRN's mscale multiplies the softmax scale twice (docs/deepseek_v3.md, "YaRN").
  scale_ = rope_->attention_scale() / std::sqrt(static_cast<double>(c.qk_head_dim()));
}

Tensor MultiHeadLatentAttention::queries(const Tensor& x) const {
  const Tensor q = q_proj ? (*q_proj)(x) : (*q_b_proj)((*q_a_layernorm)((*q_a_proj)(x)));
  return reshape(q, {x.size(0), x.size(1), heads_, nope_dim_ + rope_dim_});
}

Tensor MultiHeadLatentAttention::forward(const Tensor& x) const {
  const int64_t B = x.size(0), T = x.size(1);
  const Tensor q = queries(x);
  const Tensor compressed = (*kv_a_proj_with_mqa)(x);  // [B, T, kv_rank + rope_dim]
  const Tensor c_kv = narrow(compressed, 2, 0, kv_rank_), k_pe = narrow(compressed, 2, kv_rank_, rope_dim_);
  const Tensor kv = reshape((*kv_b_proj)((*kv_a_layernorm)(c_kv)), {B, T, heads_, nope_dim_ + v_dim_});
  if (T > rope_->max_position_embeddings())
    fail("MLA: {} positions exceed max_position_embeddings {}", T, rope_->max_position_embeddings());
  const DType dtype = q.dtype();
  const auto [query, key, value] = mla_heads(q, kv, k_pe, rope_->cos(dtype), rope_->sin(dtype), nope_dim_);
  const Tensor out = scaled_dot_product_attention(permute(query, {0, 2, 1, 3}), permute(key, {0, 2, 1, 3}),
                                                  permute(value, {0, 2, 1, 3}), true, scale_);  // [B, H, T, v]
  return (*o_proj)(reshape(permute(out, {0, 2, 1, 3}), {B, T, heads_ * v_dim_}));
}

// Absorbed form (docs/deepseek_v3.md, "Absorbed cache"): with W_UK, W_UV the key and value halves of kv_b_proj per head,
//   q_lat = q_nope W_UK,  score = (q_lat . c + q_pe . k_pe) * scale,  o = (softmax(score) c) W_UV^T,
// the op mla_absorbed_attention. The latent c acts as a single key/value head shared by every query
// head (MQA over the cache).
Tensor MultiHeadLatentAttention::forward_absorbed(const Tensor& x, LatentCache& cache) const {
  nn::ForwardScope scope(*this);
  const int64_t B = x.size(0), T = x.size(1), start = cache.length;
  if (cache.rows.size(0) != B) fail("MLA: cache batch {} differs from input batch {}", cache.rows.size(0), B);
  if (start + T > cache.capacity())
    fail("MLA: cache of {} positions cannot take {} more after {}", cache.capacity(), T, start);
  const Tensor q = queries(x);
  const Tensor q_nope = narrow(q, 3, 0, nope_dim_), q_pe = rope_->apply(narrow(q, 3, nope_dim_, rope_dim_), start);
  const Tensor compressed = (*kv_a_proj_with_mqa)(x);
  const Tensor new_rows = narrow(cache.rows, 1, start, T);  // [B, T, kv_rank + rope_dim]
  narrow(new_rows, 2, 0, kv_rank_).copy_((*kv_a_layernorm)(narrow(compressed, 2, 0, kv_rank_)));
  const Tensor k_pe = rope_->apply(reshape(narrow(compressed, 2, kv_rank_, rope_dim_), {B, T, 1, rope_dim_}), start);
  narrow(new_rows, 2, kv_rank_, rope_dim_).copy_(reshape(k_pe, {B, T, rope_dim_}));
  cache.length = start + T;
  cache.rounded_length = keep_rounded_rows(cache.rows, start, cache.length, cache.rounded, cache.rounded_length);

  const Tensor out = mla_absorbed_attention(q_nope, q_pe, narrow(cache.rows, 1, 0, cache.length), kv_b_proj->weight,
                                           v_dim_, scale_);  // [B, T, H * v]
  return (*o_proj)(out);
}

}  // namespace latent::models

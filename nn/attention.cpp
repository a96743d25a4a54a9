// nn::CausalSelfAttention and its KV cache.
#include "attention.hpp"

#include <cmath>
#include <string>

#include "../autograd/attention.hpp"
#include "../autograd/grad_mode.hpp"
#include "../autograd/node.hpp"
#include "../autograd/shape_ops.hpp"
#include "../core/gemm.hpp"

namespace latent::nn {

KVCache::KVCache(int64_t capacity) : capacity_(capacity) {
  if (capacity <= 0) fail("KVCache: capacity must be positive, got {}", capacity);
}

void KVCache::append(const Tensor& k, const Tensor& v) {
  if (k.dim() != 4 || v.dim() != 4 || k.size(0) != v.size(0) || k.size(1) != v.size(1) || k.size(2) != v.size(2))
    fail("KVCache: expected k [B, T, Hkv, Dk] and v [B, T, Hkv, Dv], got k {}, v {}", shape_str(k.shape()),
         shape_str(v.shape()));
  if (k.dtype() != v.dtype()) fail("KVCache: k is {} but v is {}", dtype_name(k.dtype()), dtype_name(v.dtype()));
  const int64_t B = k.size(0), T = k.size(1), heads = k.size(2);
  if (!keys_.defined()) {
    keys_ = Tensor::empty({B, capacity_, heads, k.size(3)}, k.dtype());
    values_ = Tensor::empty({B, capacity_, heads, v.size(3)}, v.dtype());
  }
  if (B != keys_.size(0) || heads != keys_.size(2) || k.size(3) != keys_.size(3) || v.size(3) != values_.size(3) ||
      k.dtype() != keys_.dtype())
    fail("KVCache: k {}, v {} ({}) do not match the cache's k {}, v {} ({}) in batch, heads or head dims",
         shape_str(k.shape()), shape_str(v.shape()), dtype_name(k.dtype()), shape_str(keys_.shape()),
         shape_str(values_.shape()), dtype_name(keys_.dtype()));
  if (length_ + T > capacity_)
    fail("KVCache: cannot append {} positions after {} in a cache of capacity {}", T, length_, capacity_);
  narrow(keys_, 1, length_, T).copy_(k.detach());
  narrow(values_, 1, length_, T).copy_(v.detach());
  const int64_t start = length_;
  length_ += T;
  keep_rounded_rows(values_, start, length_, values_rounded_, rounded_length_);
  rounded_length_ = keep_rounded_rows(keys_, start, length_, keys_rounded_, rounded_length_);
}

Tensor KVCache::keys() const { return keys_.defined() ? narrow(keys_, 1, 0, length_) : Tensor(); }
Tensor KVCache::values() const { return values_.defined() ? narrow(values_, 1, 0, length_) : Tensor(); }

CausalSelfAttention::CausalSelfAttention(int64_t hidden, int64_t heads, int64_t kv_heads,
                                         const CausalSelfAttentionOptions& options)
    : hidden_size(hidden), num_heads(heads), num_kv_heads(kv_heads), head_dim(options.head_dim) {
  if (hidden <= 0 || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0)
    fail("CausalSelfAttention: hidden_size {}, num_heads {}, num_kv_heads {}: sizes must be positive and num_heads "
         "a multiple of num_kv_heads",
         hidden, heads, kv_heads);
  if (head_dim == 0) {
    if (hidden % heads != 0)
      fail("CausalSelfAttention: hidden_size {} is not divisible by num_heads {}; set head_dim", hidden, heads);
    head_dim = hidden / heads;
  }
  if (head_dim <= 0 || head_dim % 2 != 0)
    fail("CausalSelfAttention: head_dim must be positive and even (RoPE rotates pairs), got {}", head_dim);
  q_proj = register_module("q_proj", std::make_shared<Linear>(hidden, heads * head_dim, options.bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(hidden, kv_heads * head_dim, options.bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(hidden, kv_heads * head_dim, options.bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads * head_dim, hidden, options.bias));
  rotary = std::make_shared<const RotaryEmbedding>(head_dim, options.max_position_embeddings, options.rope_theta,
                                                   options.rope_scaling);
}

Tensor CausalSelfAttention::forward(const Tensor& x, KVCache* cache) const {
  if (x.dim() != 3 || x.size(2) != hidden_size)
    fail("CausalSelfAttention: expected x [B, T, {}], got {}", hidden_size, shape_str(x.shape()));
  if (cache && GradMode::is_enabled() && (x.requires_grad() || autograd::any_requires_grad(parameters())))
    fail("CausalSelfAttention: the KV cache is for inference (gradients cannot reach cached keys and values); "
         "run it under NoGradGuard");
  const int64_t B = x.size(0), T = x.size(1), start = cache ? cache->length() : 0;
  const Tensor q = rotary->apply(reshape((*q_proj)(x), {B, T, num_heads, head_dim}), start);
  Tensor k = rotary->apply(reshape((*k_proj)(x), {B, T, num_kv_heads, head_dim}), start);
  Tensor v = reshape((*v_proj)(x), {B, T, num_kv_heads, head_dim});
  if (cache) {
    cache->append(k, v);
    k = cache->keys();
    v = cache->values();
  }
  const double scale = rotary->attention_scale() / std::sqrt(static_cast<double>(head_dim));
  // [B, H, T, D] views of [B, T, H, D] data: the op reads them in place and returns its output laid
  // out as [B, T, H, D], so the merge of the heads below is free.
  const Tensor out = scaled_dot_product_attention(permute(q, {0, 2, 1, 3}), permute(k, {0, 2, 1, 3}),
                                                  permute(v, {0, 2, 1, 3}), true, scale);
  return (*o_proj)(reshape(permute(out, {0, 2, 1, 3}), {B, T, num_heads * head_dim}));
}

}  // namespace latent::nn

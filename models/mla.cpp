// MLA: training form and absorbed decoding form.
#include "mla.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../autograd/node.hpp"
#include "../autograd/ops.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "../core/factory.hpp"
#include "../nn/init.hpp"

namespace latent::models {
namespace {

std::shared_ptr<nn::Linear> projection(int64_t in, int64_t out, double std) {
  auto l = std::make_shared<nn::Linear>(in, out, false);
  nn::init::normal_(l->weight, 0.0, std);
  return l;
}

// RoPE on one head's rope dims at position t (nn::RotaryEmbedding's convention and tables: adjacent
// pairs, (a, b) -> (a c - b s, a s + b c)); with `transposed` the inverse rotation, which is the
// backward: (ga, gb) -> (ga c + gb s, -ga s + gb c). The multiply-adds are explicit fmas: left to
// the compiler, the vectorised loop and its scalar fallback (picked at run time from the buffers'
// addresses) may fuse different pairs, and the result would depend on where memory happened to be.
template <class T>
void rotate(const T* in, T* out, const T* cos, const T* sin, int64_t half, bool transposed) {
  const T sign = transposed ? T(-1) : T(1);
  for (int64_t i = 0; i < half; ++i) {
    const T a = in[2 * i], b = in[2 * i + 1], c = cos[i], s = sign * sin[i];
    out[2 * i] = std::fma(a, c, -(b * s));
    out[2 * i + 1] = std::fma(a, s, b * c);
  }
}

struct HeadsOutput {
  Tensor query, key, value;
};

// MLA's per-head attention inputs from the projections, in one pass each way, position t = 0 .. L-1:
//   query[b,t,h] = [q_nope, rope_t(q_pe)]               q    [B, L, H, nope + rope]
//   key[b,t,h]   = [k_nope[b,t,h], rope_t(k_pe[b,t])]    kv   [B, L, H, nope + v], k_pe [B, L, rope]
//   value        = kv[..., nope:]                        (a view of kv: no copy)
// Backward: dq = [dquery_nope, rope^-1(dquery_pe)], dkv = [dkey_nope, dvalue] and
// dk_pe = rope^-1(sum over heads of dkey_pe). Composing this from narrow, RoPE, expand and cat costs
// a copy per piece forward and, backward, a zero-padded full-size gradient per narrow plus the sums
// of those: several passes over [B, L, H, D] per layer instead of one.
HeadsOutput mla_heads(const Tensor& q, const Tensor& kv, const Tensor& k_pe, const nn::RotaryEmbedding& rope,
                      int64_t nope) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), D = q.size(3), half = (D - nope) / 2,
                V = kv.size(3) - nope;
  const DType dtype = q.dtype();
  if (L > rope.max_position_embeddings())
    throw Error("MLA: " + std::to_string(L) + " positions exceed max_position_embeddings " +
                std::to_string(rope.max_position_embeddings()));
  return dispatch_floating(dtype, "MLA", [&]<class T>() {
    const Tensor cos = rope.cos(dtype), sin = rope.sin(dtype);  // [max_positions, half]
    const Tensor qc = contiguous_copy(q.detach()), kvc = contiguous_copy(kv.detach());
    const Tensor pe = contiguous_copy(k_pe.detach());
    Tensor query = Tensor::empty({B, L, H, D}, dtype), key = Tensor::empty({B, L, H, D}, dtype);
    const T *pq = qc.data<T>(), *pkv = kvc.data<T>(), *ppe = pe.data<T>(), *pc = cos.data<T>(), *ps = sin.data<T>();
    T *pquery = query.data<T>(), *pkey = key.data<T>();
    parallel_for(B * L, 64, [&](int64_t begin, int64_t end) {
      std::vector<T> rotated(static_cast<size_t>(2 * half));  // the shared k_pe, rotated once per position
      T* k_rot = rotated.data();
      for (int64_t bt = begin; bt < end; ++bt) {
        const int64_t t = bt % L;
        const T *c = pc + t * half, *s = ps + t * half;
        rotate(ppe + bt * 2 * half, k_rot, c, s, half, false);
        for (int64_t h = 0; h < H; ++h) {
          const T* qh = pq + (bt * H + h) * D;
          T *query_h = pquery + (bt * H + h) * D, *key_h = pkey + (bt * H + h) * D;
          std::copy_n(qh, nope, query_h);
          rotate(qh + nope, query_h + nope, c, s, half, false);
          std::copy_n(pkv + (bt * H + h) * (nope + V), nope, key_h);
          std::copy_n(k_rot, 2 * half, key_h + nope);
        }
      }
    });
    const Tensor value = kvc.as_strided({B, L, H, V}, {L * H * (nope + V), H * (nope + V), nope + V, 1}, nope);
    std::vector<Tensor> outs = autograd::record_multi(
        "mla_heads", {query, key, value}, {q, kv, k_pe},
        [cos, sin, B, L, H, D, V, nope, half](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
          const DType dtype = cos.dtype();
          const Tensor dquery = grads[0].defined() ? contiguous_copy(grads[0]) : Tensor();
          const Tensor dkey = grads[1].defined() ? contiguous_copy(grads[1]) : Tensor();
          const Tensor dvalue = grads[2].defined() ? contiguous_copy(grads[2]) : Tensor();
          Tensor dq = Tensor::empty({B, L, H, D}, dtype), dkv = Tensor::empty({B, L, H, nope + V}, dtype),
                 dpe = Tensor::empty({B, L, 2 * half}, dtype);
          const T *pc = cos.data<T>(), *ps = sin.data<T>();
          const T* pdquery = dquery.defined() ? dquery.data<T>() : nullptr;
          const T* pdkey = dkey.defined() ? dkey.data<T>() : nullptr;
          const T* pdvalue = dvalue.defined() ? dvalue.data<T>() : nullptr;
          T *pdq = dq.data<T>(), *pdkv = dkv.data<T>(), *pdpe = dpe.data<T>();
          parallel_for(B * L, 64, [&](int64_t begin, int64_t end) {
            std::vector<T> pe_sum(static_cast<size_t>(2 * half));
            for (int64_t bt = begin; bt < end; ++bt) {
              const int64_t t = bt % L;
              const T *c = pc + t * half, *s = ps + t * half;
              std::fill(pe_sum.begin(), pe_sum.end(), T(0));
              for (int64_t h = 0; h < H; ++h) {
                const int64_t at = (bt * H + h) * D;
                T *dq_h = pdq + at, *dkv_h = pdkv + (bt * H + h) * (nope + V);
                if (pdquery) {
                  std::copy_n(pdquery + at, nope, dq_h);
                  rotate(pdquery + at + nope, dq_h + nope, c, s, half, true);
                } else {
                  std::fill_n(dq_h, D, T(0));
                }
                if (pdkey) {
                  std::copy_n(pdkey + at, nope, dkv_h);
                  for (int64_t i = 0; i < 2 * half; ++i) pe_sum[static_cast<size_t>(i)] += pdkey[at + nope + i];
                } else {
                  std::fill_n(dkv_h, nope, T(0));
                }
                if (pdvalue)
                  std::copy_n(pdvalue + (bt * H + h) * V, V, dkv_h + nope);
                else
                  std::fill_n(dkv_h + nope, V, T(0));
              }
              rotate(pe_sum.data(), pdpe + bt * 2 * half, c, s, half, true);
            }
          });
          return {dq, dkv, dpe};
        });
    return HeadsOutput{outs[0], outs[1], outs[2]};
  });
}

}  // namespace

LatentCache::LatentCache(int64_t batch, int64_t capacity, const DeepSeekV3Config& c, DType dtype)
    : kv(zeros({batch, capacity, c.kv_lora_rank}, dtype)), k_pe(zeros({batch, capacity, c.qk_rope_head_dim}, dtype)) {}

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
  // YaRN's mscale multiplies the softmax scale twice (MODEL.md).
  scale_ = rope_->attention_scale() / std::sqrt(static_cast<double>(c.qk_head_dim()));
}

Tensor MultiHeadLatentAttention::queries(const Tensor& x) const {
  const Tensor q = q_proj ? q_proj->forward(x) : q_b_proj->forward(q_a_layernorm->forward(q_a_proj->forward(x)));
  return reshape(q, {x.size(0), x.size(1), heads_, nope_dim_ + rope_dim_});
}

Tensor MultiHeadLatentAttention::forward(const Tensor& x) const {
  nn::ForwardScope scope(*this);
  const int64_t B = x.size(0), T = x.size(1);
  const Tensor q = queries(x);
  const Tensor compressed = kv_a_proj_with_mqa->forward(x);  // [B, T, kv_rank + rope_dim]
  const Tensor c_kv = narrow(compressed, 2, 0, kv_rank_), k_pe = narrow(compressed, 2, kv_rank_, rope_dim_);
  const Tensor kv = reshape(kv_b_proj->forward(kv_a_layernorm->forward(c_kv)), {B, T, heads_, nope_dim_ + v_dim_});
  const auto [query, key, value] = mla_heads(q, kv, k_pe, *rope_, nope_dim_);
  const Tensor out = scaled_dot_product_attention(permute(query, {0, 2, 1, 3}), permute(key, {0, 2, 1, 3}),
                                                  permute(value, {0, 2, 1, 3}), true, scale_);  // [B, H, T, v]
  return o_proj->forward(reshape(permute(out, {0, 2, 1, 3}), {B, T, heads_ * v_dim_}));
}

// Absorbed form (spec 5.5): with W_UK, W_UV the key and value halves of kv_b_proj per head,
//   q_lat = q_nope W_UK,  score = (q_lat . c + q_pe . k_pe) * scale,  o = (softmax(score) c) W_UV^T.
// The latent c acts as a single key/value head shared by every query head (MQA over the cache).
Tensor MultiHeadLatentAttention::forward_absorbed(const Tensor& x, LatentCache& cache) const {
  nn::ForwardScope scope(*this);
  const int64_t B = x.size(0), T = x.size(1), start = cache.length;
  if (cache.kv.size(0) != B) throw Error("MLA: cache batch " + std::to_string(cache.kv.size(0)) + " differs from input batch " + std::to_string(B));
  if (start + T > cache.capacity())
    throw Error("MLA: cache of " + std::to_string(cache.capacity()) + " positions cannot take " + std::to_string(T) +
                " more after " + std::to_string(start));
  const Tensor q = queries(x);
  const Tensor q_nope = narrow(q, 3, 0, nope_dim_), q_pe = rope_->apply(narrow(q, 3, nope_dim_, rope_dim_), start);
  const Tensor compressed = kv_a_proj_with_mqa->forward(x);
  const Tensor c_kv = kv_a_layernorm->forward(narrow(compressed, 2, 0, kv_rank_));
  const Tensor k_pe = rope_->apply(reshape(narrow(compressed, 2, kv_rank_, rope_dim_), {B, T, 1, rope_dim_}), start);
  narrow(cache.kv, 1, start, T).copy_(c_kv);
  narrow(cache.k_pe, 1, start, T).copy_(reshape(k_pe, {B, T, rope_dim_}));
  cache.length = start + T;

  const Tensor w = reshape(kv_b_proj->weight, {heads_, nope_dim_ + v_dim_, kv_rank_});
  const Tensor w_uk = narrow(w, 1, 0, nope_dim_), w_uv = narrow(w, 1, nope_dim_, v_dim_);
  const Tensor q_lat = matmul(permute(q_nope, {0, 2, 1, 3}), w_uk);  // [B, H, T, kv_rank]
  const Tensor query = cat({q_lat, permute(q_pe, {0, 2, 1, 3})}, 3);
  const Tensor latent = narrow(cache.kv, 1, 0, cache.length).unsqueeze(1);  // [B, 1, S, kv_rank]
  const Tensor key = cat({latent, narrow(cache.k_pe, 1, 0, cache.length).unsqueeze(1)}, 3);
  const Tensor o_lat = scaled_dot_product_attention(query, key, latent, true, scale_);  // [B, H, T, kv_rank]
  const Tensor out = matmul(o_lat, transpose(w_uv, 1, 2));                              // [B, H, T, v]
  return o_proj->forward(reshape(permute(out, {0, 2, 1, 3}), {B, T, heads_ * v_dim_}));
}

}  // namespace latent::models

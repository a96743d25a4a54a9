// mla_absorbed_attention: Multi-head Latent Attention's attention in the absorbed form, over a cache of
// latents and rotated keys, as one differentiable op with a fused kernel for the decoding step.
#pragma once
#include <cstdint>

#include "../core/tensor.hpp"

namespace latent {

// The absorbed form (docs/deepseek_v3.md, "Absorbed cache"). With W_UK[h] [nope, rank] and W_UV[h]
// [v, rank] the key and value rows of head h in kv_b_weight [H * (nope + v), rank], and the cache rows
// (c_j, k_pe_j) of positions j < S, for each query (b, t, h):
//   q_lat = q_nope W_UK,  s_j = (q_lat . c_j + q_pe . k_pe_j) * scale  over j <= t + S - T (causal),
//   out = W_UV (sum_j softmax(s)_j c_j)
// q_nope [B, T, H, nope], q_pe [B, T, H, rope] (rotated), cache [B, S, rank + rope] holding the T query
// positions last (S >= T), kv_b_weight as above; scale 0 means 1/sqrt(rank + rope). Returns
// [B, T, H * v], the input of o_proj.
// Defined by its composition: matmul (q_nope W_UK), cat, scaled_dot_product_attention with the cache as
// one shared kv head, matmul (W_UV); gradients flow through it. One query position with no node to
// record (a decoding step under NoGradGuard) runs a fused kernel instead, which reads the cache and
// kv_b_weight in place and agrees with the composition to rounding. f32 or f64, one dtype.
Tensor mla_absorbed_attention(const Tensor& q_nope, const Tensor& q_pe, const Tensor& cache, const Tensor& kv_b_weight,
                              int64_t v_dim, double scale);

}  // namespace latent

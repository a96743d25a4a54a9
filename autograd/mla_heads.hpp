// mla_heads: Multi-head Latent Attention's per-head queries, keys and values assembled from its
// projections in one differentiable op (RoPE on the rope dims included).
#pragma once
#include <cstdint>

#include "../core/tensor.hpp"

namespace latent {

struct MlaHeads {
  Tensor query, key, value;
};

// For q [B, L, H, nope + rope], kv [B, L, H, nope + V] and the shared k_pe [B, L, rope], at positions
// t = 0 .. L-1 with RoPE tables cos, sin [P, rope/2] (P >= L, contiguous, of q's dtype):
//   query[b,t,h] = [q_nope, rope_t(q_pe)]            [B, L, H, nope + rope]
//   key[b,t,h]   = [k_nope[b,t,h], rope_t(k_pe[b,t])] [B, L, H, nope + rope]
//   value        = kv[..., nope:]                    [B, L, H, V], a view of a copy of kv
// where q = [q_nope, q_pe] and kv = [k_nope, value] split at nope, and rope_t rotates adjacent pairs
// as rotary_embedding does. f32 or f64; inputs may be any strided views.
MlaHeads mla_heads(const Tensor& q, const Tensor& kv, const Tensor& k_pe, const Tensor& cos, const Tensor& sin,
                   int64_t nope);

}  // namespace latent

// Fused scaled dot-product attention (causal, grouped-query heads, KV-cache aware): one differentiable
// op whose backward recomputes the attention weights tile by tile instead of storing them.
#pragma once
#include "../core/tensor.hpp"

namespace latent {

// softmax(q k^T * scale + mask) v per (batch, head), for
//   q [B, H, T, Dqk], k [B, Hkv, S, Dqk], v [B, Hkv, S, Dv]   (Dv may differ from Dqk),
// where query head h reads kv head h / (H / Hkv) (grouped-query attention; H % Hkv == 0).
// scale 0 means 1/sqrt(Dqk). causal: query i (0-based) sees keys j <= i + (S - T), so the last T of
// S cached positions attend as in a full causal pass (needs S >= T); otherwise every key is seen.
// Returns [B, H, T, Dv]. Inputs may be any strided views; views whose last dim is contiguous (as
// permute(x[B, T, H, D], {0, 2, 1, 3})) are read in place, and the output and gradients are laid out
// in memory like q and the respective input, so permuting back to [B, T, H, D] costs no copy.
// f32 or f64. Only q, k, v, the output and one logsumexp per query row are kept for the backward.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = true,
                                    double scale = 0.0);

}  // namespace latent

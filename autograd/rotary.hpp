// The rotary position embedding op (RoPE over adjacent pairs of the last dim) and the pair rotation
// loop it shares with fused callers (mla_heads).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"

namespace latent {

// Rotates each adjacent pair (x[2i], x[2i+1]) of the last dim of x [B, T, H, D] by the angle of
// position positions[t] and pair i, read from the tables cos, sin [P, D/2]:
//   out[2i]   = x[2i] cos - x[2i+1] sin
//   out[2i+1] = x[2i] sin + x[2i+1] cos
// x may be any strided view (f32 or f64); the tables are contiguous and of x's dtype; positions holds
// T values in [0, P). Returns a contiguous tensor. The backward is the inverse rotation (angle -theta).
Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin, std::vector<int64_t> positions);

// The loop behind rotary_embedding for one row of `half` pairs, for fused callers that rotate inside
// their own tasks: (a, b) -> (a c - b s, a s + b c), or with `inverse` the transposed rotation
// (a, b) -> (a c + b s, -a s + b c), which is the backward. The multiply-adds are explicit fmas: left
// to the compiler, the vectorised loop and its scalar fallback (picked at run time from the buffers'
// addresses) may fuse different pairs, and the result would depend on where memory happened to be.
template <class T>
inline void rotate_pairs(const T* in, T* out, const T* cos, const T* sin, int64_t half, bool inverse) {
  const T sign = inverse ? T(-1) : T(1);
  for (int64_t i = 0; i < half; ++i) {
    const T a = in[2 * i], b = in[2 * i + 1], c = cos[i], s = sign * sin[i];
    out[2 * i] = std::fma(a, c, -(b * s));
    out[2 * i + 1] = std::fma(a, s, b * c);
  }
}

}  // namespace latent

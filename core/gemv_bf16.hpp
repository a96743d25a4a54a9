// One-row bfloat16 x bfloat16 -> float32 products on the calling thread, with AVX-512 BF16's vdpbf16ps
// and no library call: a decoding step's products (one token through every linear layer and expert),
// where oneDNN's per-call set-up cost more than reading the weights (BENCHMARKS.md, decode speed).
// Internal to latent (not installed).
#pragma once
#include <cstdint>

#include "bfloat16.hpp"

namespace latent {

// Row-major c[1, N] = alpha * op(A) @ op(B) + beta * c with op(A) one row: A[k * inc_a] for k < K (inc_a
// is 1 for a row, A's leading dimension for a transposed A). Each output adds its products in a fixed
// order that depends only on K and on op(B)'s layout, in float32, then is scaled by alpha; beta = 0
// never reads c. Requires cpu_has_avx512_bf16().
void gemv_bf16(bool trans_b, int64_t N, int64_t K, float alpha, const bfloat16* A, int64_t inc_a, const bfloat16* B,
               int64_t ldb, float beta, float* c);

}  // namespace latent

// Small bfloat16 x bfloat16 -> float32 products on the calling thread, with AVX-512 BF16's
// vdpbf16ps and no library call: for attention's block products (autograd/attention.cpp), tens of
// thousands per training step with one side 32 to 64 long, where oneDNN's per-call set-up and
// operand packing cost as much as the arithmetic. Internal to latent (not installed).
#pragma once
#include <cstdint>

#include "bfloat16.hpp"

namespace latent {

// Row-major C[M,N] = alpha * op(A) @ op(B) + beta * C, as gemm_bf16 (core/gemm_bf16.hpp): each output
// sums its k pairs in order into one float32 (vdpbf16ps: exact products, bfloat16 subnormals read as
// zero), then is scaled by alpha. Requires cpu_has_avx512_bf16(). Meant for small operands: B (and a
// transposed A) is copied into a per-thread buffer, and nothing is blocked for the caches.
void gemm_bf16_small(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A,
                     int64_t lda, const bfloat16* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace latent

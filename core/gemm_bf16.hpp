// bfloat16 x bfloat16 -> float32 GEMMs on oneDNN's matmul primitive (one-row products on
// core/gemv_bf16.hpp's kernel), run on the calling thread.
// Internal to core: gemm.cpp converts the float32 operands and calls this per block.
#pragma once
#include <cstdint>
#include <string>

#include "bfloat16.hpp"

namespace latent {

// Row-major C[M,N] = alpha * op(A) @ op(B) + beta * C with bfloat16 A and B and float32 C, on the
// calling thread alone. Requires bf16_gemm_supported().
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A,
               int64_t lda, const bfloat16* B, int64_t ldb, float beta, float* C, int64_t ldc);

bool bf16_gemm_supported(std::string* why);
std::string bf16_gemm_description();  // library, version and kernel, e.g. for the start-up report

}  // namespace latent

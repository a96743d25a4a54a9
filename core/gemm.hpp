// Matrix multiply, cut into row or column blocks across the pool: OpenBLAS (called single-threaded),
// or oneDNN on bfloat16-rounded operands for float32 under MatmulPrecision::kBFloat16.
#pragma once
#include <cstdint>

#include "matmul_precision.hpp"
#include "tensor.hpp"

namespace latent {

// Row-major C[M,N] = alpha * op(A) @ op(B) + beta * C, op = transpose when trans_* is set. Under
// kBFloat16 a float32 call rounds A and B to bfloat16 once (nearest even), and C accumulates in float32.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// The same product on the calling thread alone, never split across the pool: for callers that are
// already one of many parallel tasks (DeepSeekMoE runs each expert's GEMM chain as one task).
template <class T>
void gemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                 const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// a [..., M, K] @ b [..., K, N] with broadcast batch dims, no autograd. Operands whose last two dims
// are a (possibly transposed) strided matrix go to BLAS as they are.
Tensor matmul_kernel(const Tensor& a, const Tensor& b);

}  // namespace latent

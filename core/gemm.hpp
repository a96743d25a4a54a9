// Matrix multiply on OpenBLAS (called single-threaded), cut into row or column blocks across the pool.
#pragma once
#include <cstdint>

#include "tensor.hpp"

namespace latent {

// Row-major C[M,N] = alpha * op(A) @ op(B) + beta * C, op = transpose when trans_* is set.
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
// The same product of two matrices, a [M, K] @ b [K, N], written row-major into `out`, a contiguous
// tensor of M * N elements of any shape (a layer's [B, T, N] output, say).
void matmul_into(const Tensor& a, const Tensor& b, const Tensor& out);

}  // namespace latent

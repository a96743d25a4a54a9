// Matrix multiply, cut into row or column blocks across the pool: OpenBLAS (called single-threaded),
// or oneDNN on bfloat16-rounded operands for float32 under MatmulPrecision::kBFloat16.
#pragma once
#include <cstdint>

#include "bfloat16.hpp"
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
// are a (possibly transposed) strided matrix go to BLAS as they are. Either operand may be bfloat16,
// rounded by the caller (a weight from bf16_weight, bf16_weights.hpp): the product then runs at bf16
// precision with float32 output, as float32 operands do under kBFloat16.
Tensor matmul_kernel(const Tensor& a, const Tensor& b);
// The same product of two matrices, a [M, K] @ b [K, N], written row-major into `out`, a contiguous
// tensor of M * N elements of any shape (a layer's [B, T, N] output, say).
void matmul_into(const Tensor& a, const Tensor& b, const Tensor& out);

// ---- under kBFloat16, for ops that use an operand in several products and round it once ----------

// Rounds a [rows, cols] float32 matrix stored with leading dimension ld to a packed bfloat16 one
// (leading dimension cols) on the calling thread: the bits of Tensor::to(kBFloat16).
void round_to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld, bfloat16* dst);

// t rounded to bfloat16, in t's own layout when t fills its memory exactly (contiguous, or a
// transpose or permutation of a contiguous tensor: rounded as one flat array) or is rows with gaps
// between them (a slice of each row: the same layout, gaps closed), else as a contiguous copy. A
// bfloat16 t is returned as it is, a t with a current rounded copy (below) as a view of it.
Tensor to_bf16_operand(const Tensor& t);

// For an op about to write a new float32 tensor t that GEMMs will read (a norm's output, read by
// linear layers): under kBFloat16, where to write t's elements rounded (the bits of
// Tensor::to(kBFloat16)), one for each element of t's storage, in the same pass that writes t, while
// each value is in cache. The caller must write them all before t is read: to_bf16_operand then
// returns them instead of reading t again, until an in-place write bumps t's version. Null (round
// nothing) at another precision, or unless t is float32 and spans its storage.
bfloat16* rounded_copy(const Tensor& t);

// t's rounded copy, as a bfloat16 view with t's shape, strides and offset; undefined if it has none.
Tensor rounded_view(const Tensor& t);

// For a float32 buffer that grows by appending along dim 1 (a KV cache: [B, capacity, ...], contiguous),
// after positions [start, length) were written: under kBFloat16, rounds into `copy` (made on first use)
// the positions it lacks, from min(rounded, start) to length, and attaches it as rows' rounded copy,
// so that attention over rows[:, :length] reads it instead of rounding the whole cache for every new
// token. `rounded` counts the leading positions of copy that are current; returns the new count (at
// another precision the copy just stops at start and is not attached). Positions past length are never
// read, so the copy leaves them as they are.
int64_t keep_rounded_rows(const Tensor& rows, int64_t start, int64_t length, Tensor& copy, int64_t rounded);

// C[M,N] = alpha op(A) op(B) + beta C with bfloat16 A and B and float32 C, cut across the pool into
// the blocks gemm uses (gemm_bf16 in gemm_bf16.hpp runs the same product on the calling thread).
void gemm_bf16_blocks(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A,
                      int64_t lda, const bfloat16* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace latent

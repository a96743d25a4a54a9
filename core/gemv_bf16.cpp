// vdpbf16ps multiplies two bfloat16 pairs per float32 lane and adds both products to the lane. With B
// stored [N, K] (a linear layer's weight, read as W^T) a row of B and the row of A are both contiguous
// in k: 32 k of one output per instruction, four outputs at a time, each summed across its lanes at the
// end. With B stored [K, N] the pairs of 16 columns are built from two rows of B (the even k widened,
// the odd k shifted into the upper half of each word) and multiplied by A's pair broadcast to all lanes.
#include "gemv_bf16.hpp"

#include <algorithm>
#include <vector>

#include "avx512_bf16.hpp"
#include "error.hpp"

#ifdef LATENT_HAVE_AVX512_BF16_KERNEL

namespace latent {
namespace {

constexpr int64_t kLanes = 16;  // float32 lanes per vector; 32 bfloat16
constexpr int kRows = 4;        // outputs per pass over A when B is stored [N, K]

LATENT_AVX512_BF16_TARGET inline __mmask32 first32(int64_t count) {
  return count >= 32 ? ~__mmask32(0) : (__mmask32(1) << count) - 1;
}
LATENT_AVX512_BF16_TARGET inline __mmask16 first16(int64_t count) {
  return count >= kLanes ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << count) - 1);
}

LATENT_AVX512_BF16_TARGET inline float finish(float sum, float alpha, float beta, const float* c) {
  return beta == 0.0f ? alpha * sum : alpha * sum + beta * *c;
}

// B stored [N, K]: c[n] = sum over k of a[k] B[n, k], R rows of B per pass. Each step also prefetches
// the same columns of the next R rows: a decoding step reads each weight once, mostly from memory, and
// the hardware prefetcher alone left this loop at a quarter of the bandwidth it reaches with them (a
// prefetch past the last row is harmless: prefetches never fault).
template <int R>
LATENT_AVX512_BF16_TARGET void rows_of_b(int64_t K, float alpha, const bfloat16* a, const bfloat16* B, int64_t ldb,
                                         float beta, float* c) {
  __m512 acc[R];
  for (int j = 0; j < R; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 2 * kLanes) {
    const __mmask32 lanes = first32(K - k);  // zero past K in both operands: those lanes add 0
    const __m512bh av = (__m512bh)_mm512_maskz_loadu_epi16(lanes, a + k);
#pragma GCC unroll 8
    for (int j = 0; j < R; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(B + (j + R) * ldb + k), _MM_HINT_T0);
      acc[j] = _mm512_dpbf16_ps(acc[j], av, (__m512bh)_mm512_maskz_loadu_epi16(lanes, B + j * ldb + k));
    }
  }
  for (int j = 0; j < R; ++j) c[j] = finish(_mm512_reduce_add_ps(acc[j]), alpha, beta, c + j);
}

// B stored [K, N]: c[n0 + j * 16 + l] for V vectors of 16 columns, the last masked to `last` lanes.
template <int V>
LATENT_AVX512_BF16_TARGET void columns_of_b(int64_t K, float alpha, const bfloat16* a, const bfloat16* B,
                                            int64_t ldb, float beta, float* c, __mmask16 last) {
  __m512 acc[V];
  __mmask16 mask[V];
  for (int j = 0; j < V; ++j) acc[j] = _mm512_setzero_ps(), mask[j] = j == V - 1 ? last : __mmask16(0xFFFF);
  for (int64_t k = 0; k < K; k += 2) {
    const bool pair = k + 1 < K;
    const uint32_t word = a[k].bits | (pair ? static_cast<uint32_t>(a[k + 1].bits) << 16 : 0u);
    const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(word));
    const bfloat16 *even = B + k * ldb, *odd = even + ldb;
#pragma GCC unroll 4
    for (int j = 0; j < V; ++j) {
      __m512i bv = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask[j], even + j * kLanes));
      if (pair)
        bv = _mm512_or_si512(bv, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask[j], odd + j * kLanes)), 16));
      acc[j] = _mm512_dpbf16_ps(acc[j], av, (__m512bh)bv);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int j = 0; j < V; ++j) {
    __m512 v = _mm512_mul_ps(acc[j], va);
    if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask[j], c + j * kLanes), v);
    _mm512_mask_storeu_ps(c + j * kLanes, mask[j], v);
  }
}

LATENT_AVX512_BF16_TARGET void gemv_kernel(bool tb, int64_t N, int64_t K, float alpha, const bfloat16* a,
                                           const bfloat16* B, int64_t ldb, float beta, float* c) {
  if (tb) {
    int64_t n = 0;
    for (; n + kRows <= N; n += kRows) rows_of_b<kRows>(K, alpha, a, B + n * ldb, ldb, beta, c + n);
    for (; n < N; ++n) rows_of_b<1>(K, alpha, a, B + n * ldb, ldb, beta, c + n);
    return;
  }
  for (int64_t n = 0; n < N; n += 4 * kLanes) {
    const int64_t cols = std::min(N - n, 4 * kLanes), vectors = (cols + kLanes - 1) / kLanes;
    const __mmask16 last = first16(cols - (vectors - 1) * kLanes);
    switch (vectors) {
      case 4: columns_of_b<4>(K, alpha, a, B + n, ldb, beta, c + n, last); break;
      case 3: columns_of_b<3>(K, alpha, a, B + n, ldb, beta, c + n, last); break;
      case 2: columns_of_b<2>(K, alpha, a, B + n, ldb, beta, c + n, last); break;
      default: columns_of_b<1>(K, alpha, a, B + n, ldb, beta, c + n, last); break;
    }
  }
}

}  // namespace

void gemv_bf16(bool tb, int64_t N, int64_t K, float alpha, const bfloat16* A, int64_t inc_a, const bfloat16* B,
               int64_t ldb, float beta, float* c) {
  if (!cpu_has_avx512_bf16()) fail("gemv_bf16: this CPU lacks AVX-512 BF16");
  if (N <= 0) return;
  const bfloat16* a = A;
  if (inc_a != 1 && K > 0) {  // a column of a transposed A: gathered once, the kernels read rows
    thread_local std::vector<bfloat16> row;
    row.resize(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) row[static_cast<size_t>(k)] = A[k * inc_a];
    a = row.data();
  }
  gemv_kernel(tb, N, K, alpha, a, B, ldb, beta, c);
}

}  // namespace latent

#else  // not x86-64: no AVX-512

namespace latent {
void gemv_bf16(bool, int64_t, int64_t, float, const bfloat16*, int64_t, const bfloat16*, int64_t, float, float*) {
  fail("gemv_bf16: needs AVX-512 BF16, an x86-64 extension");
}
}  // namespace latent

#endif

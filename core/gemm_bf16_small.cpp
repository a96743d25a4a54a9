// vdpbf16ps multiplies two bfloat16 pairs per float32 lane and adds both products to the lane, so the
// kernel wants, for each k pair, B's pairs of 16 consecutive columns in one vector, and A's pair of one
// row broadcast to all lanes. B is copied into that layout first ("pair words": the two bfloat16 of
// k = 2i and 2i + 1 side by side, as one 32-bit word); A is read in place when its rows are contiguous
// in k (not transposed), else copied the same way. A register tile holds MR rows by NR vectors of 16
// columns: MR * NR accumulators plus NR vectors of B stay within the 32 vector registers.
#include "gemm_bf16_small.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "avx512_bf16.hpp"
#include "error.hpp"

#ifdef LATENT_HAVE_AVX512_BF16_KERNEL

namespace latent {
namespace {

constexpr int64_t kColumns = 16;  // float32 lanes per vector
constexpr int kMaxVectors = 4;    // NR: columns per panel, 64

// An operand read as pair words: the word of row r (of C's rows, or of B's k pairs) and pair i is at
// base + r * row_step + i * pair_step bytes. `half_last`: K is odd and the last pair's second bfloat16
// lies past the row (A read in place), so only its first is read, widened with zero.
struct PairWords {
  const char* base;
  int64_t row_step, pair_step;
  bool half_last;
};

// B (or a transposed A) copied into pair words, [ceil(K/2)][cols_padded], zero past K and past cols.
// From rows: the k of a pair are two rows of src ([K, cols], ld apart).
void pack_row_pairs(int64_t K, int64_t cols, int64_t cols_padded, const bfloat16* src, int64_t ld, uint32_t* dst) {
  for (int64_t i = 0; 2 * i < K; ++i) {
    uint32_t* out = dst + i * cols_padded;
    const bfloat16 *even = src + 2 * i * ld, *odd = even + ld;
    if (2 * i + 1 < K)  // two loops, so that each vectorises
      for (int64_t c = 0; c < cols; ++c) out[c] = even[c].bits | static_cast<uint32_t>(odd[c].bits) << 16;
    else
      for (int64_t c = 0; c < cols; ++c) out[c] = even[c].bits;
    std::fill(out + cols, out + cols_padded, 0u);
  }
}

// 16 rows of 16 words each, transposed in registers: rows[c] word i becomes rows[i] word c. Four rounds
// of shuffles (words, double words, then 128-bit lanes twice) instead of 256 scalar moves.
LATENT_AVX512_BF16_TARGET inline void transpose_16x16(__m512i (&rows)[16]) {
  __m512i t[16], u[16];
  for (int r = 0; r < 16; r += 2) {
    t[r] = _mm512_unpacklo_epi32(rows[r], rows[r + 1]);  // per 128-bit lane k: words 4k, 4k+1 of rows r, r+1
    t[r + 1] = _mm512_unpackhi_epi32(rows[r], rows[r + 1]);  // words 4k+2, 4k+3
  }
  for (int g = 0; g < 4; ++g) {  // u[4g + j], lane k: word 4k + j of rows 4g .. 4g+3
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    // Lanes of u[j] (rows 0-3) and u[4 + j] (rows 4-7): a holds lanes 0 and 2, b lanes 1 and 3; c and d
    // the same for rows 8-15. Word 4k + j of all 16 rows then comes from lane k of each.
    const __m512i a = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88), b = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xdd);
    const __m512i c = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88), d = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xdd);
    rows[j] = _mm512_shuffle_i32x4(a, c, 0x88);
    rows[4 + j] = _mm512_shuffle_i32x4(b, d, 0x88);
    rows[8 + j] = _mm512_shuffle_i32x4(a, c, 0xdd);
    rows[12 + j] = _mm512_shuffle_i32x4(b, d, 0xdd);
  }
}

// From columns: src is [cols, K] (B given transposed), so a pair is already a word of a row, and the
// pair words are the transpose of src's words: 16 columns by 16 pairs at a time, in registers. Row
// loads past cols and past the whole pairs are masked to zero, so the padding columns come out zero.
// Scalar, one word at a time, it was 70 % of gemm_bf16_small's own time in a bf16 training step (perf).
LATENT_AVX512_BF16_TARGET void pack_column_pairs(int64_t K, int64_t cols, int64_t cols_padded, const bfloat16* src,
                                                 int64_t ld, uint32_t* dst) {
  const int64_t whole = K / 2;
  for (int64_t c0 = 0; c0 < cols; c0 += kColumns)
    for (int64_t i0 = 0; i0 < whole; i0 += kColumns) {
      const int64_t pairs = std::min(kColumns, whole - i0);
      const __mmask16 words = static_cast<__mmask16>((1u << pairs) - 1);
      __m512i block[16];
      for (int64_t r = 0; r < kColumns; ++r)
        block[r] = c0 + r < cols ? _mm512_maskz_loadu_epi32(words, src + (c0 + r) * ld + 2 * i0) : _mm512_setzero_si512();
      transpose_16x16(block);
      for (int64_t i = 0; i < pairs; ++i) _mm512_storeu_si512(dst + (i0 + i) * cols_padded + c0, block[i]);
    }
  if (K % 2) {  // the half pair: the last bfloat16 of each row alone
    uint32_t* out = dst + whole * cols_padded;
    for (int64_t c = 0; c < cols; ++c) out[c] = src[c * ld + K - 1].bits;
    std::fill(out + cols, out + cols_padded, 0u);
  }
}

// A's word at `at` in every lane; with `Half`, only its first bfloat16 (the second lies past the row).
template <bool Half>
LATENT_AVX512_BF16_TARGET inline __m512bh broadcast_pair(const char* at) {
  uint32_t word = 0;
  std::memcpy(&word, at, Half ? sizeof(uint16_t) : sizeof(uint32_t));
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(word));
}

// acc += A's pair i of rows [0, MR) times B's pair i.
template <int MR, int NR, bool Half>
LATENT_AVX512_BF16_TARGET inline void add_pair(__m512 (&acc)[MR][NR], int64_t i, const PairWords& a, const uint32_t* b,
                                               int64_t b_ld) {
  __m512bh bv[NR];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) bv[j] = (__m512bh)_mm512_loadu_si512(b + i * b_ld + j * kColumns);
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r) {
    const __m512bh av = broadcast_pair<Half>(a.base + r * a.row_step + i * a.pair_step);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], av, bv[j]);
  }
}

// C rows [0, MR) by NR vectors of columns: alpha * A B + beta * C, the last vector masked to `last`.
template <int MR, int NR>
LATENT_AVX512_BF16_TARGET void tile(int64_t pairs, const PairWords& a, const uint32_t* b, int64_t b_ld, float alpha,
                                    float beta, float* C, int64_t ldc, __mmask16 last) {
  __m512 acc[MR][NR];
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[r][j] = _mm512_setzero_ps();
  const int64_t whole = a.half_last ? pairs - 1 : pairs;
  for (int64_t i = 0; i < whole; ++i) add_pair<MR, NR, false>(acc, i, a, b, b_ld);
  if (whole < pairs) add_pair<MR, NR, true>(acc, whole, a, b, b_ld);
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 32
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      float* c = C + r * ldc + j * kColumns;
      const __mmask16 mask = j == NR - 1 ? last : __mmask16(0xFFFF);
      __m512 v = _mm512_mul_ps(acc[r][j], va);
      if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, c), v);
      _mm512_mask_storeu_ps(c, mask, v);
    }
}

// Rows [m, M) that fill no whole MR-row tile, in tiles of R, R/2, ..., 1 rows (only those below MR):
// one row at a time leaves NR accumulator chains, too few to hide vdpbf16ps's latency, and ran at a
// third of a whole tile's rate; attention's products often leave 4 to 11 such rows (M = 64, 128, ...).
template <int R, int MR, int NR>
LATENT_AVX512_BF16_TARGET void leftover_rows(int64_t& m, int64_t M, int64_t pairs, PairWords& a, const uint32_t* b,
                                             int64_t b_ld, float alpha, float beta, float* C, int64_t ldc,
                                             __mmask16 last) {
  if constexpr (R < MR)
    for (; m + R <= M; m += R, a.base += R * a.row_step) tile<R, NR>(pairs, a, b, b_ld, alpha, beta, C + m * ldc, ldc, last);
  if constexpr (R > 1) leftover_rows<R / 2, MR, NR>(m, M, pairs, a, b, b_ld, alpha, beta, C, ldc, last);
}

// All M rows against one panel of NR vectors of columns.
template <int NR>
LATENT_AVX512_BF16_TARGET void panel(int64_t M, int64_t pairs, PairWords a, const uint32_t* b, int64_t b_ld,
                                     float alpha, float beta, float* C, int64_t ldc, __mmask16 last) {
  constexpr int MR = NR == 4 ? 6 : NR == 3 ? 8 : NR == 2 ? 12 : 24;
  int64_t m = 0;
  for (; m + MR <= M; m += MR, a.base += MR * a.row_step)
    tile<MR, NR>(pairs, a, b, b_ld, alpha, beta, C + m * ldc, ldc, last);
  leftover_rows<16, MR, NR>(m, M, pairs, a, b, b_ld, alpha, beta, C, ldc, last);
}

struct Buffers {
  std::vector<uint32_t> a, b;
};

}  // namespace

void gemm_bf16_small(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A, int64_t lda,
                     const bfloat16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (!cpu_has_avx512_bf16()) fail("gemm_bf16_small: this CPU lacks AVX-512 BF16");
  if (M <= 0 || N <= 0) return;
  thread_local Buffers buffers;
  const int64_t pairs = (K + 1) / 2, n_padded = (N + kColumns - 1) / kColumns * kColumns;
  buffers.b.resize(static_cast<size_t>(std::max<int64_t>(pairs, 1) * n_padded));
  if (tb)
    pack_column_pairs(K, N, n_padded, B, ldb, buffers.b.data());
  else
    pack_row_pairs(K, N, n_padded, B, ldb, buffers.b.data());
  PairWords a{reinterpret_cast<const char*>(A), lda * 2, 4, K % 2 == 1};
  if (ta) {  // A is stored [K, M]: its pairs lie in two rows
    buffers.a.resize(static_cast<size_t>(std::max<int64_t>(pairs, 1) * M));
    pack_row_pairs(K, M, M, A, lda, buffers.a.data());
    a = {reinterpret_cast<const char*>(buffers.a.data()), 4, 4 * M, false};
  }
  // K = 0 leaves every accumulator at zero: C = beta * C.
  for (int64_t n0 = 0; n0 < N; n0 += kMaxVectors * kColumns) {
    const int64_t cols = std::min(N - n0, kMaxVectors * kColumns), vectors = (cols + kColumns - 1) / kColumns;
    const int64_t tail = cols - (vectors - 1) * kColumns;
    const __mmask16 last = tail == kColumns ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << tail) - 1);
    const uint32_t* b = buffers.b.data() + n0;
    float* c = C + n0;
    switch (vectors) {
      case 4: panel<4>(M, pairs, a, b, n_padded, alpha, beta, c, ldc, last); break;
      case 3: panel<3>(M, pairs, a, b, n_padded, alpha, beta, c, ldc, last); break;
      case 2: panel<2>(M, pairs, a, b, n_padded, alpha, beta, c, ldc, last); break;
      default: panel<1>(M, pairs, a, b, n_padded, alpha, beta, c, ldc, last); break;
    }
  }
}

}  // namespace latent

#else  // not x86-64: no AVX-512

namespace latent {
void gemm_bf16_small(bool, bool, int64_t, int64_t, int64_t, float, const bfloat16*, int64_t, const bfloat16*, int64_t,
                     float, float*, int64_t) {
  fail("gemm_bf16_small: needs AVX-512 BF16, an x86-64 extension");
}
}  // namespace latent

#endif

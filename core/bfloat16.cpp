// float32 <-> bfloat16 array conversion: a portable loop and an AVX-512 BF16 kernel chosen at run time.
#include "bfloat16.hpp"

#include <algorithm>

#include "avx512_bf16.hpp"
#include "parallel.hpp"

namespace latent {
namespace {

constexpr int64_t kConvertGrain = 1 << 16;  // elements per task: below this a thread costs more than it saves

#ifdef LATENT_HAVE_AVX512_BF16_KERNEL
// Lanes of v holding a subnormal (exponent bits zero, mantissa bits not).
LATENT_AVX512_BF16_TARGET inline __mmask16 subnormal_lanes(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  return _mm512_testn_epi32_mask(b, _mm512_set1_epi32(0x7F800000)) & _mm512_test_epi32_mask(b, _mm512_set1_epi32(0x007FFFFF));
}

// 32 floats -> 32 bfloat16 at dst; `lanes` masks the last, partial group (masked-off lanes load as
// zero, which is not subnormal). The instruction flushes subnormal inputs to zero; those (rare) lanes
// are redone exactly.
LATENT_AVX512_BF16_TARGET inline void narrow_group(const float* src, bfloat16* dst, __mmask32 lanes, int64_t count) {
  const __m512 lo = _mm512_maskz_loadu_ps(__mmask16(lanes), src);
  const __m512 hi = _mm512_maskz_loadu_ps(__mmask16(lanes >> 16), src + 16);
  _mm512_mask_storeu_epi16(dst, lanes, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  if (subnormal_lanes(lo) | subnormal_lanes(hi)) [[unlikely]]
    for (int64_t j = 0; j < count; ++j) dst[j] = to_bfloat16(src[j]);
}

LATENT_AVX512_BF16_TARGET void narrow_avx512(const float* src, bfloat16* dst, int64_t n) {
  // Whole groups with an all-ones mask (the compiler drops the masking: computing a mask per group
  // made the loop 1.7x slower on cached data, bench/bf16_kernels), then the partial group masked:
  // GEMM operands are often rounded row by row, and rows of 24 or 48 elements would otherwise spend
  // most of their time in a scalar tail.
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) narrow_group(src + i, dst + i, ~__mmask32(0), 32);
  if (i < n) narrow_group(src + i, dst + i, (__mmask32(1) << (n - i)) - 1, n - i);
}

LATENT_AVX512_BF16_TARGET void narrow_rows_avx512(const float* src, int64_t rows, int64_t cols, int64_t ld,
                                                  bfloat16* dst, int64_t dst_ld) {
  for (int64_t r = 0; r < rows; ++r) narrow_avx512(src + r * ld, dst + r * dst_ld, cols);
}

bool detect_avx512_bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
#endif

}  // namespace

bool cpu_has_avx512_bf16() {
#ifdef LATENT_HAVE_AVX512_BF16_KERNEL
  static const bool has = detect_avx512_bf16();
  return has;
#else
  return false;
#endif
}

void float_to_bfloat16_portable(const float* src, bfloat16* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = to_bfloat16(src[i]);
}

bool float_to_bfloat16_avx512(const float* src, bfloat16* dst, int64_t n) {
#ifdef LATENT_HAVE_AVX512_BF16_KERNEL
  if (!cpu_has_avx512_bf16()) return false;
  narrow_avx512(src, dst, n);
  return true;
#else
  (void)src, (void)dst, (void)n;
  return false;
#endif
}

void float_to_bfloat16_here(const float* src, bfloat16* dst, int64_t n) {
  if (!float_to_bfloat16_avx512(src, dst, n)) float_to_bfloat16_portable(src, dst, n);
}

void float_to_bfloat16_rows_here(const float* src, int64_t rows, int64_t cols, int64_t ld, bfloat16* dst,
                                 int64_t dst_ld) {
#ifdef LATENT_HAVE_AVX512_BF16_KERNEL
  if (cpu_has_avx512_bf16()) return narrow_rows_avx512(src, rows, cols, ld, dst, dst_ld);
#endif
  for (int64_t r = 0; r < rows; ++r) float_to_bfloat16_portable(src + r * ld, dst + r * dst_ld, cols);
}

void float_to_bfloat16(const float* src, bfloat16* dst, int64_t n) {
  parallel_for(n, kConvertGrain, [&](int64_t b, int64_t e) { float_to_bfloat16_here(src + b, dst + b, e - b); });
}

void bfloat16_to_float(const bfloat16* src, float* dst, int64_t n) {
  parallel_for(n, kConvertGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) dst[i] = to_float(src[i]);  // a shift: GCC vectorises it
  });
}

}  // namespace latent

// bfloat16, the element type of DType::BFloat16 (the top 16 bits of a binary32), and its conversion
// to and from float32: widening is exact; narrowing rounds to nearest, ties to even.
#pragma once
#include <bit>
#include <cstdint>

namespace latent {

struct bfloat16 {
  uint16_t bits = 0;
};

// Round to nearest even. Infinities stay infinite, finite values past the largest bfloat16 become
// infinite (as IEEE 754 rounding says), subnormals round like any other value (no flush to zero),
// and a NaN stays a NaN: its sign and top payload bits are kept and the quiet bit set, so that a
// signalling NaN whose payload lives in the dropped bits cannot turn into an infinity.
constexpr bfloat16 to_bfloat16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return {static_cast<uint16_t>((bits >> 16) | 0x0040u)};
  const uint32_t lsb = (bits >> 16) & 1u;  // adding 0x7FFF plus the kept lsb rounds half to even
  return {static_cast<uint16_t>((bits + 0x7FFFu + lsb) >> 16)};
}

constexpr float to_float(bfloat16 value) { return std::bit_cast<float>(static_cast<uint32_t>(value.bits) << 16); }

// Arrays, split across the pool for large n. Narrowing uses AVX-512 BF16 (vcvtne2ps2bf16) when the
// CPU has it, with the portable rounding above for subnormal inputs (the instruction flushes them);
// both paths give the same bits.
void float_to_bfloat16(const float* src, bfloat16* dst, int64_t n);
void bfloat16_to_float(const bfloat16* src, float* dst, int64_t n);

// Narrowing on the calling thread, by the fastest of the two paths below the CPU allows: for code
// that is already split across the pool (a GEMM operand's rows, a strided copy's rows).
void float_to_bfloat16_here(const float* src, bfloat16* dst, int64_t n);
// The same for `rows` rows of `cols` elements, ld apart in src and dst_ld apart in dst: one call for
// many short rows (an attention head's 32 or 48 values), where a call per row cost more than its rounding.
void float_to_bfloat16_rows_here(const float* src, int64_t rows, int64_t cols, int64_t ld, bfloat16* dst,
                                 int64_t dst_ld);

// The two narrowing paths on the calling thread, for tests that compare them: the vectorised one
// returns false (and writes nothing) when the CPU or the build lacks AVX-512 BF16.
void float_to_bfloat16_portable(const float* src, bfloat16* dst, int64_t n);
bool float_to_bfloat16_avx512(const float* src, bfloat16* dst, int64_t n);
bool cpu_has_avx512_bf16();

}  // namespace latent

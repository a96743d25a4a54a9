// bfloat16: conversion checked exhaustively and against a reference rounding written here, the
// vectorised path against the portable one, and the tensor-level dtype (to(), printing, factories).
#include <bit>
#include <cmath>
#include <random>

#include "../helpers.hpp"
#include "core/strided.hpp"

using namespace latent;

namespace {

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
bool is_nan_bits(uint16_t b) { return (b & 0x7F80u) == 0x7F80u && (b & 0x7Fu) != 0; }

// The value a bfloat16 bit pattern stands for, in double; an all-ones exponent counts as 2^128, the
// next power of two, which is where IEEE rounding places the overflow threshold.
double value_of(uint16_t b) {
  const double magnitude = (b & 0x7F80u) == 0x7F80u
                               ? std::ldexp(1.0, 128)
                               : static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(b & 0x7FFFu) << 16));
  return b & 0x8000u ? -magnitude : magnitude;
}

// Round to nearest even by comparing distances to the two neighbours in double, a different route
// from the library's integer bias.
uint16_t reference_round(float x) {
  const uint32_t u = bits_of(x);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x40u);
  if (std::isinf(x)) return static_cast<uint16_t>(u >> 16);
  const uint16_t down = static_cast<uint16_t>(u >> 16), up = static_cast<uint16_t>(down + 1);  // toward, away from 0
  const double below = std::abs(static_cast<double>(x) - value_of(down));
  const double above = std::abs(value_of(up) - static_cast<double>(x));
  if (below < above) return down;
  if (above < below) return up;
  return (down & 1u) ? up : down;
}

}  // namespace

TEST_CASE("bfloat16 -> float32 -> bfloat16 is the identity on all 65,536 values, NaNs stay NaN", "[bfloat16]") {
  int nans = 0;
  for (uint32_t b = 0; b <= 0xFFFFu; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    const float wide = to_float(bfloat16{bits});
    INFO("bfloat16 0x" << std::hex << b);
    REQUIRE(bits_of(wide) == b << 16);  // widening appends 16 zero bits
    const uint16_t back = to_bfloat16(wide).bits;
    if (is_nan_bits(bits)) {
      ++nans;
      REQUIRE(is_nan_bits(back));
      REQUIRE(back == (bits | 0x40u));  // quieted, sign and payload kept
    } else {
      REQUIRE(back == bits);
    }
  }
  CHECK(nans == 2 * 127);
}

TEST_CASE("float32 -> bfloat16 rounds to nearest even on hand-picked and random values", "[bfloat16]") {
  // Hand-computed: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 and goes to the even 1 (0x3F80);
  // 1 + 3 * 2^-8 is halfway between 0x3F81 and 0x3F82 and goes to 0x3F82; just above a half rounds up.
  CHECK(to_bfloat16(1.0f + 0x1p-8f).bits == 0x3F80);
  CHECK(to_bfloat16(1.0f + 3 * 0x1p-8f).bits == 0x3F82);
  CHECK(to_bfloat16(std::bit_cast<float>(0x3F808001u)).bits == 0x3F81);
  CHECK(to_bfloat16(-1.0f - 0x1p-8f).bits == 0xBF80);
  CHECK(to_bfloat16(INFINITY).bits == 0x7F80);
  CHECK(to_bfloat16(-INFINITY).bits == 0xFF80);
  CHECK(to_bfloat16(std::numeric_limits<float>::max()).bits == 0x7F80);   // overflows to infinity
  CHECK(to_bfloat16(std::bit_cast<float>(0x7F7F7FFFu)).bits == 0x7F7F);  // below the threshold: stays finite
  CHECK(to_bfloat16(std::bit_cast<float>(0x7F800001u)).bits == 0x7FC0);  // signalling NaN, payload in the low bits
  CHECK(to_bfloat16(std::bit_cast<float>(0x00008000u)).bits == 0x0000);  // subnormal tie to even zero
  CHECK(to_bfloat16(std::bit_cast<float>(0x00018000u)).bits == 0x0002);  // subnormal tie to even 2

  std::mt19937 rng(1234);
  for (int i = 0; i < 2'000'000; ++i) {
    const uint32_t u = rng();
    const float x = std::bit_cast<float>(i % 4 == 0 ? (u & 0xFFFF0000u) | 0x8000u : u);  // a quarter exact ties
    INFO("float32 bits 0x" << std::hex << u);
    REQUIRE(to_bfloat16(x).bits == reference_round(x));
  }
}

TEST_CASE("the vectorised conversion gives the portable path's bits", "[bfloat16]") {
  std::mt19937 rng(99);
  std::vector<float> src(100'003);  // not a multiple of the vector width: the tail runs too
  for (size_t i = 0; i < src.size(); ++i) {
    const uint32_t u = rng();
    // Mix random bits (NaNs, infinities, subnormals) with ordinary values and exact ties.
    src[i] = std::bit_cast<float>(i % 3 == 0 ? u : i % 3 == 1 ? (u & 0xFFFF0000u) | 0x8000u : u & 0x807FFFFFu);
  }
  std::vector<bfloat16> portable(src.size()), vectorised(src.size()), pooled(src.size());
  float_to_bfloat16_portable(src.data(), portable.data(), static_cast<int64_t>(src.size()));
  if (!float_to_bfloat16_avx512(src.data(), vectorised.data(), static_cast<int64_t>(src.size()))) {
    WARN("this CPU has no AVX-512 BF16: only the portable path was checked");
    vectorised = portable;
  }
  float_to_bfloat16(src.data(), pooled.data(), static_cast<int64_t>(src.size()));
  for (size_t i = 0; i < src.size(); ++i) {
    INFO("element " << i << ", float32 bits 0x" << std::hex << bits_of(src[i]));
    REQUIRE(vectorised[i].bits == portable[i].bits);
    REQUIRE(pooled[i].bits == portable[i].bits);
  }
  // Short rows, as GEMM operands are rounded row by row: every length up to two vectors and a bit,
  // from an unaligned start, and nothing written past the end (the partial group is masked).
  for (int64_t n = 0; n <= 70; ++n) {
    INFO("length " << n);
    std::vector<bfloat16> out(static_cast<size_t>(n) + 8, bfloat16{0xABCD});
    if (!float_to_bfloat16_avx512(src.data() + 5, out.data() + 3, n)) break;
    for (int64_t i = 0; i < n; ++i) REQUIRE(out[size_t(i + 3)].bits == portable[size_t(i + 5)].bits);
    for (size_t i : {size_t(0), size_t(1), size_t(2)}) CHECK(out[i].bits == 0xABCD);
    for (size_t i = size_t(n) + 3; i < out.size(); ++i) CHECK(out[i].bits == 0xABCD);
  }
}

TEST_CASE("rows rounded in one call: the bits of rounding each row, nothing written between rows", "[bfloat16]") {
  std::mt19937 rng(7);
  const int64_t rows = 9, cols = 37, ld = 45, dst_ld = 40;
  std::vector<float> src(static_cast<size_t>(rows * ld));
  for (float& v : src) v = std::bit_cast<float>(static_cast<uint32_t>(rng()) & 0xBFFFFFFFu);  // finite and NaN-free mostly
  std::vector<bfloat16> out(static_cast<size_t>(rows * dst_ld), bfloat16{0xABCD});
  float_to_bfloat16_rows_here(src.data(), rows, cols, ld, out.data(), dst_ld);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < dst_ld; ++c) {
      INFO("row " << r << ", column " << c);
      const size_t at = static_cast<size_t>(r * dst_ld + c);
      REQUIRE(out[at].bits == (c < cols ? to_bfloat16(src[static_cast<size_t>(r * ld + c)]).bits : 0xABCD));
    }
}

TEST_CASE("bfloat16 tensors: to(), from float64, printing, factories, to_vector", "[bfloat16]") {
  const Tensor x = from_vector<float>({1.0f, 1.0f + 0x1p-8f, -3.5f, 1e-3f}, {2, 2});
  const Tensor b = x.to(kBFloat16);
  CHECK(b.dtype() == kBFloat16);
  const std::vector<bfloat16> bits = b.to_vector<bfloat16>();
  CHECK(bits[0].bits == 0x3F80);
  CHECK(bits[1].bits == 0x3F80);
  CHECK(bits[2].bits == 0xC060);
  CHECK(bits[3].bits == to_bfloat16(1e-3f).bits);
  CHECK(b.to_vector<float>() == std::vector<float>{1.0f, 1.0f, -3.5f, to_float(to_bfloat16(1e-3f))});
  CHECK(b.to(kFloat64).to_vector<double>()[2] == -3.5);
  // A transposed (non-contiguous) source converts element by element.
  CHECK(x.t().to(kBFloat16).to_vector<float>() == std::vector<float>{1.0f, -3.5f, 1.0f, to_float(to_bfloat16(1e-3f))});

  // float64 -> bfloat16 in one rounding: 1 + 2^-8 + 2^-30 is above the tie, so it rounds up, though
  // its nearest float32 is the tie itself (which would round down to 1).
  const Tensor d = from_vector<double>({1.0 + 0x1p-8 + 0x1p-30, -(1.0 + 0x1p-8 + 0x1p-30), 1.0 + 0x1p-8});
  const std::vector<bfloat16> db = d.to(kBFloat16).to_vector<bfloat16>();
  CHECK(db[0].bits == 0x3F81);
  CHECK(db[1].bits == 0xBF81);
  CHECK(db[2].bits == 0x3F80);

  CHECK(full({2}, 0.1, kBFloat16).to_vector<bfloat16>()[1].bits == 0x3DCD);  // 0.1 = 0x3DCCCCCD in float32
  CHECK(zeros({3}, kBFloat16).to_vector<float>() == std::vector<float>{0, 0, 0});
  CHECK(scalar_tensor(2.5, kBFloat16).item() == 2.5);
  CHECK(b.to_string() == "tensor([[1, 1],\n        [-3.5, 0.000999451]], shape=[2, 2], dtype=bfloat16)");

  CHECK_THROWS_WITH(b.to_vector<double>(), Catch::Contains("requested float64"));
  CHECK_THROWS_WITH(b + b, Catch::Contains("bfloat16"));
}

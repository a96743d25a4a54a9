// F16 and FP8 E4M3 -> float32, bit-exact (docs/checkpoints.md, "Tensor dtypes").
#include "narrow_floats.hpp"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace latent::io {

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent - 15 + 127) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // A subnormal half is a normal float: shift the mantissa up until its leading 1 reaches the
    // implicit-bit position, lowering the exponent each step.
    int32_t e = -14;  // value = mantissa / 2^10 * 2^-14
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (static_cast<uint32_t>(e + 127) << 23) | ((mantissa & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

namespace {

float e4m3_value(uint8_t bits) {
  const int exponent = (bits >> 3) & 0xF, mantissa = bits & 0x7;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) magnitude = std::numeric_limits<float>::quiet_NaN();
  else if (exponent == 0) magnitude = std::ldexp(static_cast<float>(mantissa), -9);  // m/8 * 2^-6
  else magnitude = std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);   // (1 + m/8) * 2^(e-7)
  return (bits & 0x80) ? -magnitude : magnitude;
}

// 256 codes: a table is both the simplest and the fastest decoder.
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> values{};
    for (int code = 0; code < 256; ++code) values[static_cast<size_t>(code)] = e4m3_value(static_cast<uint8_t>(code));
    return values;
  }();
  return table;
}

}  // namespace

float float8_e4m3_to_float(uint8_t bits) { return e4m3_table()[bits]; }

void decode_half(const unsigned char* src, float* dst, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);  // the file gives no alignment guarantee
    dst[i] = half_to_float(h);
  }
}

void decode_float8_e4m3(const unsigned char* src, float* dst, int64_t count) {
  const std::array<float, 256>& table = e4m3_table();
  for (int64_t i = 0; i < count; ++i) dst[i] = table[src[i]];
}

}  // namespace latent::io

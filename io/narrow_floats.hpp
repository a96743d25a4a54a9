// Decoding the narrow floating-point formats checkpoints store (IEEE binary16 "F16" and the FP8
// E4M3 of DeepSeek-V3's published weights, "F8_E4M3") into float32, exactly: every value of both
// formats is a float32 value (docs/checkpoints.md, "Tensor dtypes").
#pragma once
#include <cstdint>

namespace latent::io {

// IEEE 754 binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits; subnormals, infinities and
// NaNs (payload kept) included.
float half_to_float(uint16_t bits);

// OCP FP8 E4M3 ("e4m3fn", torch.float8_e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits.
// It has no infinities: exponent 15 is an ordinary binade except mantissa 7, which is NaN
// (0x7F, 0xFF), so the largest finite value is 1.75 * 2^8 = 448. Exponent 0 holds the subnormals
// m/8 * 2^-6 and the two zeros.
float float8_e4m3_to_float(uint8_t bits);

// The same over arrays read straight from a file (`src` needs no alignment).
void decode_half(const unsigned char* src, float* dst, int64_t count);
void decode_float8_e4m3(const unsigned char* src, float* dst, int64_t count);

}  // namespace latent::io

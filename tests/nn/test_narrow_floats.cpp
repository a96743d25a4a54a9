// FP8 E4M3 and F16 decoding: all 256 E4M3 codes against the format's definition, hand-computed
// values (zeros, subnormals, 1, the largest finite 448, NaN at 0x7F/0xFF), and F8_E4M3 tensors read
// from a safetensors file (docs/checkpoints.md, "Tensor dtypes").
#include <bit>
#include <cmath>

#include "io/narrow_floats.hpp"
#include "io/safetensors.hpp"
#include "../helpers.hpp"

using namespace latent;

namespace {

uint32_t float_bits(float f) { return std::bit_cast<uint32_t>(f); }

// The definition written out for one code, in double: sign, 4-bit biased exponent (bias 7), 3-bit
// fraction; exponent 0 is subnormal (no implicit 1, exponent 1 - 7); S.1111.111 is NaN; no infinities.
double e4m3_by_definition(unsigned code) {
  const double sign = (code & 0x80) ? -1.0 : 1.0;
  const unsigned exponent = (code >> 3) & 15, fraction = code & 7;
  if (exponent == 15 && fraction == 7) return std::nan("");
  if (exponent == 0) return sign * (fraction / 8.0) * std::pow(2.0, 1 - 7);
  return sign * (1.0 + fraction / 8.0) * std::pow(2.0, static_cast<double>(exponent) - 7);
}

}  // namespace

TEST_CASE("E4M3 decodes every one of the 256 codes as the format defines", "[narrow_floats]") {
  int nans = 0;
  for (unsigned code = 0; code < 256; ++code) {
    INFO("code 0x" << std::hex << code);
    const float got = io::float8_e4m3_to_float(static_cast<uint8_t>(code));
    const double expected = e4m3_by_definition(code);
    if (std::isnan(expected)) {
      ++nans;
      CHECK(std::isnan(got));
    } else {
      CHECK(static_cast<double>(got) == expected);
      CHECK(std::signbit(got) == ((code & 0x80) != 0));  // -0 for 0x80
    }
    CHECK(!std::isinf(got));
  }
  CHECK(nans == 2);
}

TEST_CASE("E4M3 hand-computed values: zeros, subnormals, normals, 448 and NaN", "[narrow_floats]") {
  const std::vector<std::pair<uint8_t, float>> table = {
      {0x00, 0.0f},          {0x01, 0.001953125f},  // 2^-9, the smallest subnormal
      {0x04, 0.0078125f},                           // 4/8 * 2^-6
      {0x07, 0.013671875f},                         // 7/8 * 2^-6, the largest subnormal
      {0x08, 0.015625f},                            // 2^-6, the smallest normal
      {0x30, 0.5f},          {0x38, 1.0f},          {0x39, 1.125f},  {0x3C, 1.5f},  {0x40, 2.0f},
      {0x48, 4.0f},          {0x70, 128.0f},        // exponent 14: 2^7
      {0x77, 240.0f},                               // 1.875 * 2^7
      {0x78, 256.0f},                               // exponent 15 is an ordinary binade: 2^8
      {0x7E, 448.0f},                               // 1.75 * 2^8, the largest finite
      {0xB8, -1.0f},         {0xFE, -448.0f},       {0x81, -0.001953125f},
  };
  for (const auto& [code, value] : table) {
    INFO("code 0x" << std::hex << int(code));
    CHECK(io::float8_e4m3_to_float(code) == value);
  }
  CHECK(float_bits(io::float8_e4m3_to_float(0x80)) == 0x80000000u);  // negative zero
  CHECK(std::isnan(io::float8_e4m3_to_float(0x7F)));
  CHECK(std::isnan(io::float8_e4m3_to_float(0xFF)));
}

TEST_CASE("F8_E4M3 tensors load from safetensors as float32 and keep their dtype's name", "[narrow_floats][safetensors]") {
  const std::string header = R"({"w":{"dtype":"F8_E4M3","shape":[2,3],"data_offsets":[0,6]}})";
  std::string image(8, '\0');
  image[0] = static_cast<char>(header.size());
  image += header + std::string("\x38\x40\xB8\x01\x7E\x00", 6);
  const io::SafetensorsFile file = io::parse_safetensors(image.data(), image.size());
  const Tensor w = file.tensors.at("w");
  CHECK(w.dtype() == kFloat32);
  CHECK(w.shape() == Shape{2, 3});
  CHECK(w.to_vector<float>() == std::vector<float>{1.0f, 2.0f, -1.0f, 0.001953125f, 448.0f, 0.0f});
  CHECK(file.file_dtypes.at("w") == "F8_E4M3");
}

TEST_CASE("F16 decoding by itself: subnormals, infinities and NaN", "[narrow_floats]") {
  CHECK(io::half_to_float(0x0001) == 0x1p-24f);
  CHECK(io::half_to_float(0x03FF) == 1023 * 0x1p-24f);
  CHECK(io::half_to_float(0x3C00) == 1.0f);
  CHECK(io::half_to_float(0x7BFF) == 65504.0f);
  CHECK(io::half_to_float(0xFC00) == -INFINITY);
  CHECK(std::isnan(io::half_to_float(0x7E00)));
}

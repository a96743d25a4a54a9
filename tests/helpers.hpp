// Shared test helpers: comparing tensors with expected values, locating test data, scratch directories.
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <latent/latent.hpp>

#include "temp_dir.hpp"

namespace latent::testing {

// Every element of t (converted to double) within tol of expected.
inline void require_close(const Tensor& t, const std::vector<double>& expected, double tol = 1e-6) {
  const std::vector<double> got = t.to(kFloat64).to_vector<double>();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", expected " << expected[i]);
    REQUIRE(std::abs(got[i] - expected[i]) <= tol * (1 + std::abs(expected[i])));
  }
}

inline void require_close(const Tensor& a, const Tensor& b, double tol = 1e-6) {
  REQUIRE(a.shape() == b.shape());
  require_close(a, b.to(kFloat64).to_vector<double>(), tol);
}

inline Tensor randn64(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return randn(shape, kFloat64, &gen).requires_grad_();
}

// Whether this machine and build run bfloat16 GEMMs; where not, the calling test's bf16 part is
// skipped with a warning that says why (never silently).
inline bool bf16_available() {
  std::string why;
  if (bf16_matmul_supported(&why)) return true;
  WARN("bf16 matmul unavailable, not tested here: " << why);
  return false;
}

inline std::string test_data(const std::string& name) {
  const char* dir = std::getenv("LATENT_TEST_DATA");
  return std::string(dir ? dir : "tests/data") + "/" + name;
}

}  // namespace latent::testing

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

// Analytic gradients of sum(forward() * w), w fixed random weights, for the parameters of `module`
// (already in f64) against central differences taken by perturbing each parameter in place. With
// max_per_tensor > 0 only that many elements per tensor are checked (evenly spaced), for big models.
inline void check_parameter_gradients(nn::Module& module, const std::function<Tensor()>& forward, double eps = 1e-6,
                                      double tol = 1e-6, int64_t max_per_tensor = 0) {
  Generator gen(5);
  const Tensor weights = randn(forward().shape(), kFloat64, &gen);
  module.zero_grad();
  sum(forward() * weights).backward();
  for (auto& [name, p] : module.named_parameters()) {
    REQUIRE(p.dtype() == kFloat64);
    const Tensor grad = p.grad().defined() ? p.grad() : zeros(p.shape(), kFloat64);
    const std::vector<double> analytic = grad.to_vector<double>();
    double* data = p.data<double>();
    NoGradGuard no_grad;
    const int64_t stride = max_per_tensor > 0 ? std::max<int64_t>(1, p.numel() / max_per_tensor) : 1;
    for (int64_t i = 0; i < p.numel(); i += stride) {
      const double saved = data[i];
      data[i] = saved + eps;
      const double plus = sum(forward() * weights).item();
      data[i] = saved - eps;
      const double minus = sum(forward() * weights).item();
      data[i] = saved;
      const double numerical = (plus - minus) / (2 * eps);
      INFO(name << "[" << i << "]: analytic " << analytic[static_cast<size_t>(i)] << ", numerical " << numerical);
      REQUIRE(std::abs(analytic[static_cast<size_t>(i)] - numerical) <= tol * (1 + std::abs(numerical)));
    }
  }
}

inline std::string test_data(const std::string& name) {
  const char* dir = std::getenv("LATENT_TEST_DATA");
  return std::string(dir ? dir : "tests/data") + "/" + name;
}

}  // namespace latent::testing

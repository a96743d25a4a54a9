// The small regression problem shared by the optimizer tests and tests/optim/make_golden.py.
#pragma once
#include <vector>

#include "../helpers.hpp"

namespace latent::testing {

// loss = mean((x @ W + b - y)^2), W [3, 2], b [2]: the values of make_golden.py.
struct Regression {
  Tensor x, y, w, b;

  explicit Regression(DType dtype = kFloat64) {
    x = from_vector<double>({0.5, -1.0, 2.0, 1.5, 0.3, -0.7, -0.2, 0.8, 1.1, 0.9, -1.4, 0.4}, {4, 3}).to(dtype);
    y = from_vector<double>({1.0, -0.5, 0.2, 0.7, -1.2, 0.4, 0.6, 0.0}, {4, 2}).to(dtype);
    w = from_vector<double>({0.1, -0.2, 0.3, 0.05, -0.4, 0.25}, {3, 2}).to(dtype).requires_grad_();
    b = from_vector<double>({0.05, -0.1}, {2}).to(dtype).requires_grad_();
  }

  // Fresh gradients of the loss at the current parameters (any previous ones are dropped first).
  void backward() const {
    w.set_grad(Tensor());
    b.set_grad(Tensor());
    mean(pow(matmul(x, w) + b - y, 2.0)).backward();
  }

  // W row-major, then b: the order make_golden.py prints.
  std::vector<double> values() const {
    std::vector<double> out = w.to(kFloat64).to_vector<double>();
    for (double v : b.to(kFloat64).to_vector<double>()) out.push_back(v);
    return out;
  }

  // Runs `steps` steps of backward() then opt.step().
  template <class Opt>
  void train(Opt& opt, int steps) const {
    for (int s = 0; s < steps; ++s) {
      backward();
      opt.step();
    }
  }
};

inline void require_close(const std::vector<double>& got, const std::vector<double>& expected, double tol) {
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", expected " << expected[i]);
    REQUIRE(std::abs(got[i] - expected[i]) <= tol * (1 + std::abs(expected[i])));
  }
}

}  // namespace latent::testing

// Numerical gradient checking: the test every differentiable op and layer in latent passes.
#pragma once
#include <functional>
#include <vector>

#include "../core/tensor.hpp"

namespace latent::autograd {

struct GradcheckOptions {
  double eps = 1e-6, atol = 1e-5, rtol = 1e-3;
};

// Compares analytic gradients of sum(fn(inputs) * random weights) with central differences, in f64.
// Inputs with requires_grad are checked (float32 inputs are converted to float64 first). Returns true
// on agreement; on disagreement throws latent::Error naming the input, the element and both values.
bool gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
               const GradcheckOptions& options = {});

}  // namespace latent::autograd

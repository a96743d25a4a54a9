// nn::Linear.
#include "linear.hpp"

#include <cmath>

#include "../autograd/linalg.hpp"
#include "init.hpp"

namespace latent::nn {

Linear::Linear(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  if (in <= 0 || out <= 0) fail("Linear: sizes must be positive, got in_features {}, out_features {}", in, out);
  weight = register_parameter("weight", Tensor::empty({out, in}));
  init::kaiming_uniform_(weight, std::sqrt(5.0));  // torch.nn.Linear's reset_parameters
  if (with_bias) {
    bias = register_parameter("bias", Tensor::empty({out}));
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    init::uniform_(bias, -bound, bound);
  }
}

Tensor Linear::forward(const Tensor& x) const {
  return linear(x, weight, bias);
}

}  // namespace latent::nn

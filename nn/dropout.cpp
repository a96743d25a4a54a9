// nn::Dropout over the fused dropout op.
#include "dropout.hpp"

#include <string>

#include "../autograd/nn_ops.hpp"

namespace latent::nn {

Dropout::Dropout(double probability, std::shared_ptr<Generator> generator)
    : p(probability), generator_(std::move(generator)) {
  if (!(p >= 0 && p <= 1)) fail("Dropout: p must be in [0, 1], got {:f}", p);
}

Tensor Dropout::forward(const Tensor& x) const {
  return dropout(x, p, is_training(), generator_.get());
}

}  // namespace latent::nn

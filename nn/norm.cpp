// RMSNorm and LayerNorm modules over the fused ops.
#include "norm.hpp"

#include "../autograd/nn_ops.hpp"
#include "../core/factory.hpp"

namespace latent::nn {

RMSNorm::RMSNorm(int64_t d, double e) : dim(d), eps(e) {
  if (d <= 0) fail("RMSNorm: dim must be positive, got {}", d);
  weight = register_parameter("weight", ones({d}));
}

Tensor RMSNorm::forward(const Tensor& x) const {
  return rms_norm(x, weight, eps);
}

LayerNorm::LayerNorm(int64_t d, double e, bool affine) : dim(d), eps(e) {
  if (d <= 0) fail("LayerNorm: dim must be positive, got {}", d);
  if (affine) {
    weight = register_parameter("weight", ones({d}));
    bias = register_parameter("bias", zeros({d}));
  }
}

Tensor LayerNorm::forward(const Tensor& x) const {
  if (x.dim() == 0 || x.size(-1) != dim) fail("LayerNorm: input {} does not end in {}", shape_str(x.shape()), dim);
  return layer_norm(x, weight, bias, eps);
}

}  // namespace latent::nn

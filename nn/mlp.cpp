// SwiGLU MLP.
#include "mlp.hpp"

#include "../autograd/nn_ops.hpp"

namespace latent::nn {

SwiGLU::SwiGLU(int64_t hidden, int64_t intermediate)
    : gate_proj(register_module("gate_proj", std::make_shared<Linear>(hidden, intermediate, false))),
      up_proj(register_module("up_proj", std::make_shared<Linear>(hidden, intermediate, false))),
      down_proj(register_module("down_proj", std::make_shared<Linear>(intermediate, hidden, false))) {}

Tensor SwiGLU::forward(const Tensor& x) const {
  return (*down_proj)(swiglu((*gate_proj)(x), (*up_proj)(x)));
}

}  // namespace latent::nn

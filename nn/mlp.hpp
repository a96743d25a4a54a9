// The SwiGLU feed-forward block of Llama and DeepSeek: down_proj(silu(gate_proj(x)) * up_proj(x)).
#pragma once
#include "linear.hpp"

namespace latent::nn {

class SwiGLU : public Callable<SwiGLU> {
 public:
  SwiGLU(int64_t hidden_size, int64_t intermediate_size);  // no biases
  Tensor forward(const Tensor& x) const;

  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;
};

}  // namespace latent::nn

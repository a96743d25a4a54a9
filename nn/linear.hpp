// nn::Linear: y = x W^T + b, W [out_features, in_features] (the PyTorch / Hugging Face layout).
#pragma once
#include "module.hpp"

namespace latent::nn {

class Linear : public Callable<Linear> {
 public:
  // Initialised as torch.nn.Linear: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) const;

  int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined when constructed without one
};

}  // namespace latent::nn

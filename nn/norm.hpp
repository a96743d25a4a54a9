// Normalisation layers over the last dim: RMSNorm (weight only) and LayerNorm (weight and bias).
#pragma once
#include "module.hpp"

namespace latent::nn {

class RMSNorm : public Module {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6);  // weight initialised to ones
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t dim;
  double eps;
  Tensor weight;
};

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool elementwise_affine = true);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }

  int64_t dim;
  double eps;
  Tensor weight, bias;  // undefined without the affine part
};

}  // namespace latent::nn

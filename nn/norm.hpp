// Normalisation layers over the last dim: RMSNorm (weight only) and LayerNorm (weight and bias).
#pragma once
#include "module.hpp"

namespace latent::nn {

class RMSNorm : public Callable<RMSNorm> {
 public:
  explicit RMSNorm(int64_t dim, double eps = 1e-6);  // weight initialised to ones
  Tensor forward(const Tensor& x) const;

  int64_t dim;
  double eps;
  Tensor weight;
};

class LayerNorm : public Callable<LayerNorm> {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool elementwise_affine = true);
  Tensor forward(const Tensor& x) const;

  int64_t dim;
  double eps;
  Tensor weight, bias;  // undefined without the affine part
};

}  // namespace latent::nn

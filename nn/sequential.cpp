#include "sequential.hpp"

namespace latent::nn {

Tensor Sequential::forward(const Tensor& x) const {
  Tensor h = x;
  for (const Step& step : steps_) h = step(h);
  return h;
}

}  // namespace latent::nn

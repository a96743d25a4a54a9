// nn::Dropout: zeroes activations with probability p while training and scales the survivors by
// 1/(1-p); the identity in eval mode.
#pragma once
#include <memory>

#include "../core/random.hpp"
#include "module.hpp"

namespace latent::nn {

class Dropout : public Callable<Dropout> {
 public:
  // Masks are drawn from `generator` when given (a seeded generator reproduces them), else from the
  // global generator.
  explicit Dropout(double p = 0.5, std::shared_ptr<Generator> generator = nullptr);
  Tensor forward(const Tensor& x) const;

  double p;

 private:
  std::shared_ptr<Generator> generator_;
};

}  // namespace latent::nn

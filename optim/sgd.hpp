// optim::SGD: stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay,
// the update rule of torch.optim.SGD.
#pragma once
#include "optimizer.hpp"

namespace latent::optim {

struct SGDOptions {
  double lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0
};

// Per parameter p with gradient g, as torch.optim.SGD (b is the momentum buffer, b_0 = d at the first step):
//   d = g + weight_decay * p
//   b = momentum * b + (1 - dampening) * d
//   d = nesterov ? d + momentum * b : b          (only when momentum != 0)
//   p = p - lr * d
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options = {});  // one group
  explicit SGD(std::vector<ParamGroup<SGDOptions>> groups);
  void step() override;

  // A group's options; changes take effect at the next step(), which validates them first.
  SGDOptions& options(size_t group) { return options_.at(group); }
  const SGDOptions& options(size_t group) const { return options_.at(group); }

 protected:
  std::vector<std::pair<std::string, double>> group_hyperparameters(size_t group) const override;
  void set_group_hyperparameters(size_t group, const std::map<std::string, double>& values) override;
  std::vector<std::string> buffer_names() const override { return {"momentum_buffer"}; }

 private:
  std::vector<SGDOptions> options_;
};

}  // namespace latent::optim

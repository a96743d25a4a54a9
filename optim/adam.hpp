// optim::Adam and optim::AdamW: bias-corrected first and second moments, the update rules of
// torch.optim.Adam (L2 decay added to the gradient) and torch.optim.AdamW (decoupled decay).
#pragma once
#include "optimizer.hpp"

namespace latent::optim {

struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};
struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

// Per parameter p with gradient g, at its t-th update (t = 1, 2, ...), as torch.optim.Adam:
//   g = g + weight_decay * p                              (Adam: L2 penalty through the gradient)
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// m and v start at zero and have the parameter's dtype; eps is added outside the square root.
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options = {});  // one group
  explicit Adam(std::vector<ParamGroup<AdamOptions>> groups);
  void step() override;

  // A group's options; changes take effect at the next step(), which validates them first.
  AdamOptions& options(size_t group) { return options_.at(group); }
  const AdamOptions& options(size_t group) const { return options_.at(group); }

 protected:
  Adam(std::string name, std::vector<ParamGroup<AdamOptions>> groups, bool decoupled_weight_decay);
  std::vector<std::pair<std::string, double>> group_hyperparameters(size_t group) const override;
  void set_group_hyperparameters(size_t group, const std::map<std::string, double>& values) override;
  std::vector<std::string> buffer_names() const override { return {"exp_avg", "exp_avg_sq"}; }

 private:
  std::vector<AdamOptions> options_;
  bool decoupled_weight_decay_;
};

// Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW: before the Adam
// update above (which then sees the raw gradient), p = p * (1 - lr * weight_decay).
// Its groups' options are stored as AdamOptions (the same fields; only the defaults differ).
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions options = {});  // one group: the same options for every tensor
  explicit AdamW(std::vector<ParamGroup<AdamWOptions>> groups);
};

}  // namespace latent::optim

// Adam and AdamW: option checks and one fused pass per parameter over flat storage.
#include "adam.hpp"

#include <cmath>
#include <type_traits>
#include <vector>

#include "../core/bf16_weights.hpp"
#include "../core/bfloat16.hpp"
#include "../core/factory.hpp"
#include "../core/parallel.hpp"

namespace latent::optim {
namespace {

void validate(const AdamOptions& o, const std::string& name) {
  auto require = [&](bool ok, const char* what, double value) {
    if (!ok) fail("{}: {}, got {}", name, what, value);
  };
  require(o.lr >= 0, "lr must be >= 0", o.lr);
  require(o.beta1 >= 0 && o.beta1 < 1, "beta1 must be in [0, 1)", o.beta1);
  require(o.beta2 >= 0 && o.beta2 < 1, "beta2 must be in [0, 1)", o.beta2);
  require(o.eps >= 0, "eps must be >= 0", o.eps);
  require(o.weight_decay >= 0, "weight_decay must be >= 0", o.weight_decay);
}

std::vector<ParamGroup<AdamOptions>> as_adam_groups(std::vector<ParamGroup<AdamWOptions>> groups) {
  std::vector<ParamGroup<AdamOptions>> out;
  for (auto& [params, o] : groups)
    out.push_back({std::move(params), AdamOptions{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay}});
  return out;
}

// The scalars of one update, computed in double, then rounded once to the parameter's type.
template <class T>
struct AdamCoefficients {
  T l2, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bias2_sqrt, eps;
  AdamCoefficients(const AdamOptions& o, int64_t step, bool decoupled) {
    const double t = static_cast<double>(step);
    l2 = static_cast<T>(decoupled ? 0.0 : o.weight_decay);
    decay = static_cast<T>(decoupled ? 1.0 - o.lr * o.weight_decay : 1.0);
    beta1 = static_cast<T>(o.beta1);
    one_minus_beta1 = static_cast<T>(1.0 - o.beta1);
    beta2 = static_cast<T>(o.beta2);
    one_minus_beta2 = static_cast<T>(1.0 - o.beta2);
    step_size = static_cast<T>(o.lr / (1.0 - std::pow(o.beta1, t)));
    bias2_sqrt = static_cast<T>(std::sqrt(1.0 - std::pow(o.beta2, t)));
    eps = static_cast<T>(o.eps);
  }
};

// The whole of torch's single-tensor Adam/AdamW step over n elements of one flat tensor, in the same
// order of roundings (so f64 results agree with torch to the last few ulps).
template <class T>
void adam_update(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n, const AdamCoefficients<T>& c) {
  for (int64_t i = 0; i < n; ++i) {
    T g = grad[i];
    if (c.l2 != 0) g += c.l2 * param[i];
    if (c.decay != 1) param[i] *= c.decay;
    exp_avg[i] = exp_avg[i] * c.beta1 + c.one_minus_beta1 * g;
    exp_avg_sq[i] = exp_avg_sq[i] * c.beta2 + c.one_minus_beta2 * (g * g);
    const T denom = std::sqrt(exp_avg_sq[i]) / c.bias2_sqrt + c.eps;
    param[i] -= c.step_size * (exp_avg[i] / denom);
  }
}

// One parameter's update: its tensors, its step's coefficients in both float types, and where its
// bf16 copy is rounded in the same pass (core/bf16_weights.hpp; null: it has none to keep current).
struct Update {
  Tensor param, grad, exp_avg, exp_avg_sq;
  AdamCoefficients<float> f32;
  AdamCoefficients<double> f64;
  bfloat16* rounded = nullptr;
};

// Runs every update as one parallel loop over chunks of kUpdateGrain elements: a model has hundreds
// of small tensors, and a parallel loop per tensor would be mostly task overhead. Each element is
// updated once, by the same formula, so the result does not depend on the chunking or the threads.
void run_updates(const std::vector<Update>& updates, const char* name) {
  std::vector<std::pair<size_t, int64_t>> chunks;  // (update, first element)
  for (size_t u = 0; u < updates.size(); ++u)
    for (int64_t first = 0; first < updates[u].param.numel(); first += kUpdateGrain) chunks.emplace_back(u, first);
  parallel_for(static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const size_t u = chunks[static_cast<size_t>(c)].first;
      const int64_t first = chunks[static_cast<size_t>(c)].second;
      const Update& up = updates[u];
      const int64_t n = std::min(kUpdateGrain, up.param.numel() - first);
      dispatch_floating(up.param.dtype(), name, [&]<class T>() {
        const AdamCoefficients<T>* coefficients;
        if constexpr (std::is_same_v<T, float>) coefficients = &up.f32;
        else coefficients = &up.f64;
        adam_update<T>(up.param.data<T>() + first, up.grad.data<T>() + first, up.exp_avg.data<T>() + first,
                       up.exp_avg_sq.data<T>() + first, n, *coefficients);
        if constexpr (std::is_same_v<T, float>)  // while the chunk is in cache
          if (up.rounded) float_to_bfloat16_here(up.param.data<T>() + first, up.rounded + first, n);
      });
    }
  });
}

}  // namespace

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Adam(std::vector<ParamGroup<AdamOptions>>{{std::move(params), options}}) {}

Adam::Adam(std::vector<ParamGroup<AdamOptions>> groups) : Adam("Adam", std::move(groups), false) {}

Adam::Adam(std::string name, std::vector<ParamGroup<AdamOptions>> groups, bool decoupled_weight_decay)
    : Optimizer(std::move(name), params_of(groups)), decoupled_weight_decay_(decoupled_weight_decay) {
  for (const auto& group : groups) {
    validate(group.options, this->name());
    options_.push_back(group.options);
  }
}

void Adam::step() {
  for (const AdamOptions& o : options_) validate(o, name());
  std::vector<Update> updates;
  for (size_t g = 0; g < num_param_groups(); ++g) {
    const AdamOptions& o = options_[g];
    for (size_t i = group_begin(g); i < group_end(g); ++i) {
      const Tensor grad = prepare_update(i);
      if (!grad.defined()) continue;
      const Tensor& p = params()[i];
      ParamState& s = state(i);
      if (s.buffers.empty()) s.buffers = {zeros_like(p), zeros_like(p)};
      ++s.step;
      check_floating(p.dtype(), name().c_str());
      updates.push_back({p, grad, s.buffers[0], s.buffers[1], AdamCoefficients<float>(o, s.step, decoupled_weight_decay_),
                         AdamCoefficients<double>(o, s.step, decoupled_weight_decay_), bf16_weight_to_update(p)});
    }
  }
  run_updates(updates, name().c_str());
}

std::vector<std::pair<std::string, double>> Adam::group_hyperparameters(size_t group) const {
  const AdamOptions& o = options_.at(group);
  return {{"lr", o.lr}, {"beta1", o.beta1}, {"beta2", o.beta2}, {"eps", o.eps}, {"weight_decay", o.weight_decay}};
}

void Adam::set_group_hyperparameters(size_t group, const std::map<std::string, double>& values) {
  AdamOptions o = options_.at(group);
  for (const auto& [key, value] : values) {
    if (key == "lr")
      o.lr = value;
    else if (key == "beta1")
      o.beta1 = value;
    else if (key == "beta2")
      o.beta2 = value;
    else if (key == "eps")
      o.eps = value;
    else if (key == "weight_decay")
      o.weight_decay = value;
    else
      fail("{}: unknown hyperparameter '{}'", name(), key);
  }
  validate(o, name());
  options_[group] = o;
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions options)
    : AdamW(std::vector<ParamGroup<AdamWOptions>>{{std::move(params), options}}) {}

AdamW::AdamW(std::vector<ParamGroup<AdamWOptions>> groups) : Adam("AdamW", as_adam_groups(std::move(groups)), true) {}

}  // namespace latent::optim

// SGD: option checks and the fused per-parameter update.
#include "sgd.hpp"

#include "../core/parallel.hpp"

namespace latent::optim {
namespace {

void validate(const SGDOptions& o) {
  auto require = [](bool ok, const char* what, double value) {
    if (!ok) fail("SGD: {}, got {}", what, value);
  };
  require(o.lr >= 0, "lr must be >= 0", o.lr);
  require(o.momentum >= 0, "momentum must be >= 0", o.momentum);
  require(o.dampening >= 0 && o.dampening <= 1, "dampening must be in [0, 1]", o.dampening);
  require(o.weight_decay >= 0, "weight_decay must be >= 0", o.weight_decay);
  if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
    fail("SGD: nesterov needs momentum > 0 and dampening 0, got momentum {} and dampening {}", o.momentum, o.dampening);
}

// One pass over the flat parameter: the whole of torch's SGD step for one tensor. `buffer` is null
// without momentum; `first` means the buffer is fresh and takes d itself (torch clones d_p).
template <class T>
void sgd_update(T* param, const T* grad, T* buffer, int64_t n, const SGDOptions& o, bool first) {
  const T lr = static_cast<T>(o.lr), weight_decay = static_cast<T>(o.weight_decay);
  const T momentum = static_cast<T>(o.momentum), keep = static_cast<T>(1.0 - o.dampening);
  const bool nesterov = o.nesterov;
  parallel_for(n, kUpdateGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      T d = grad[i];
      if (weight_decay != 0) d += weight_decay * param[i];
      if (buffer) {
        buffer[i] = first ? d : buffer[i] * momentum + keep * d;
        d = nesterov ? d + momentum * buffer[i] : buffer[i];
      }
      param[i] -= lr * d;
    }
  });
}

}  // namespace

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : SGD(std::vector<ParamGroup<SGDOptions>>{{std::move(params), options}}) {}

SGD::SGD(std::vector<ParamGroup<SGDOptions>> groups) : Optimizer("SGD", params_of(groups)) {
  for (const auto& group : groups) {
    validate(group.options);
    options_.push_back(group.options);
  }
}

void SGD::step() {
  for (const SGDOptions& o : options_) validate(o);
  for (size_t g = 0; g < num_param_groups(); ++g) {
    const SGDOptions& o = options_[g];
    for (size_t i = group_begin(g); i < group_end(g); ++i) {
      const Tensor grad = prepare_update(i);
      if (!grad.defined()) continue;
      const Tensor& p = params()[i];
      ParamState& s = state(i);
      const bool first = o.momentum != 0 && s.buffers.empty();
      if (first) s.buffers.push_back(Tensor::empty(p.shape(), p.dtype()));
      const Tensor buffer = o.momentum != 0 ? s.buffers[0] : Tensor();
      dispatch_floating(p.dtype(), "SGD", [&]<class T>() {
        sgd_update<T>(p.data<T>(), grad.data<T>(), buffer.defined() ? buffer.data<T>() : nullptr, p.numel(), o, first);
      });
      ++s.step;
    }
  }
}

std::vector<std::pair<std::string, double>> SGD::group_hyperparameters(size_t group) const {
  const SGDOptions& o = options_.at(group);
  return {{"lr", o.lr},
          {"momentum", o.momentum},
          {"dampening", o.dampening},
          {"weight_decay", o.weight_decay},
          {"nesterov", o.nesterov ? 1.0 : 0.0}};
}

void SGD::set_group_hyperparameters(size_t group, const std::map<std::string, double>& values) {
  SGDOptions o = options_.at(group);
  for (const auto& [name, value] : values) {
    if (name == "lr")
      o.lr = value;
    else if (name == "momentum")
      o.momentum = value;
    else if (name == "dampening")
      o.dampening = value;
    else if (name == "weight_decay")
      o.weight_decay = value;
    else if (name == "nesterov")
      o.nesterov = value != 0;
    else
      fail("SGD: unknown hyperparameter '{}'", name);
  }
  validate(o);
  options_[group] = o;
}

}  // namespace latent::optim

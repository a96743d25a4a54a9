// optim::Optimizer: the base of every optimizer — parameter groups, per-parameter state, and the flat
// state dict (and file) that lets a run resume on exactly the same trajectory.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.hpp"

namespace latent::optim {

// Elements per parallel chunk of an optimizer's fused update: large enough to amortise a task,
// small enough to split a big matrix across every thread.
inline constexpr int64_t kUpdateGrain = 1 << 14;

// Parameters that share hyperparameters, e.g. matrices with weight decay and norms/biases without:
//   AdamW opt({{decay, {.lr = 3e-4, .weight_decay = 0.1}}, {no_decay, {.lr = 3e-4, .weight_decay = 0.0}}});
template <class Options>
struct ParamGroup {
  std::vector<Tensor> params;
  Options options;
};

// Parameters are numbered across groups in order (group 0's first, ...): that index names their state.
// The state dict is flat, one tensor per entry, so it saves as safetensors:
//   "group.<g>.params"  Int64 [n]: the indices of group g's parameters (checks the layout on load)
//   "group.<g>.<name>"  Float64 scalar: a hyperparameter ("lr", "weight_decay", "momentum", "beta1", ...;
//                       flags as 0/1), restored on load as torch.optim does
//   "state.<i>.step"    Int64 scalar: how many updates parameter i has received (absent before the first)
//   "state.<i>.<name>"  a buffer of parameter i in its dtype and shape ("exp_avg", "momentum_buffer", ...)
class Optimizer {
 public:
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;  // copies would share the state buffers
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient; parameters whose gradient is undefined are
  // left untouched, state included (as torch.optim does).
  virtual void step() = 0;
  // Makes every parameter's gradient undefined (torch's set_to_none=True): the next backward
  // allocates fresh gradients instead of adding into stale ones.
  void zero_grad();

  void set_lr(double lr);  // every group's learning rate (what a schedule calls before step())
  double lr() const;       // the first group's learning rate

  size_t num_param_groups() const { return group_begin_.size() - 1; }
  const std::vector<Tensor>& params() const { return params_; }  // all groups', in state-dict order
  int64_t step_count(size_t param_index) const { return state_.at(param_index).step; }

  std::map<std::string, Tensor> state_dict() const;
  // Replaces hyperparameters and state with `state`'s (values are copied; nothing is shared with the
  // map). Throws latent::Error, changing nothing, when the groups, the number of parameters or a
  // buffer's shape differ, or when keys are missing or unexpected.
  void load_state_dict(const std::map<std::string, Tensor>& state);
  void save(const std::string& path) const;  // state_dict() as safetensors, written atomically
  // load_state_dict of a file written by save(); the buffers the file holds in the parameters'
  // dtype become the state as read, so loading holds the state once, not a file's copy besides it.
  void load(const std::string& path);

 protected:
  // name: the optimizer's name in error messages ("AdamW"). groups: each group's parameters; every
  // parameter must be a defined, floating-point, contiguous tensor, listed once.
  Optimizer(std::string name, const std::vector<std::vector<Tensor>>& groups);

  template <class Options>
  static std::vector<std::vector<Tensor>> params_of(const std::vector<ParamGroup<Options>>& groups) {
    std::vector<std::vector<Tensor>> out;
    for (const auto& group : groups) out.push_back(group.params);
    return out;
  }

  // The hyperparameters of group g by name, in a fixed order; flags as 0/1.
  virtual std::vector<std::pair<std::string, double>> group_hyperparameters(size_t group) const = 0;
  // Sets the named hyperparameters of group g, then validates the group's options as a whole as the
  // constructor does; throws latent::Error, changing nothing, on an unknown name or an invalid value.
  virtual void set_group_hyperparameters(size_t group, const std::map<std::string, double>& values) = 0;
  // The names of the buffers a parameter's state holds, in the order of ParamState::buffers.
  virtual std::vector<std::string> buffer_names() const = 0;

  struct ParamState {
    int64_t step = 0;             // updates received
    std::vector<Tensor> buffers;  // empty until created, then one per buffer_names(), contiguous
  };

  // Indices of group g's parameters: [group_begin(g), group_end(g)).
  size_t group_begin(size_t group) const { return group_begin_.at(group); }
  size_t group_end(size_t group) const { return group_begin_.at(group + 1); }
  // Parameter i's gradient, checked to be usable for an update (same dtype and shape as the
  // parameter) and made contiguous; undefined when the parameter has none (skip it). When defined,
  // the parameter's existing buffers are in its dtype (converted if Module::to changed it since).
  Tensor prepare_update(size_t param_index);
  ParamState& state(size_t param_index) { return state_[param_index]; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::vector<Tensor> params_;
  std::vector<size_t> group_begin_;  // num_groups + 1 entries: group g is [group_begin_[g], group_begin_[g+1])
  std::vector<ParamState> state_;    // one per parameter

  // load_state_dict; with `adopt`, buffers already contiguous and in their parameter's dtype are
  // taken as they are instead of copied (for tensors nothing else holds: load's).
  void load_state(const std::map<std::string, Tensor>& state, bool adopt);
};

}  // namespace latent::optim

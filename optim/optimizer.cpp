// Optimizer bookkeeping: groups, per-parameter state, and the flat state dict with its strict loader.
#include "optimizer.hpp"

#include <algorithm>
#include <charconv>
#include <optional>
#include <unordered_set>

#include "../core/factory.hpp"
#include "../core/strided.hpp"
#include "../io/safetensors.hpp"

namespace latent::optim {
namespace {

// A state-dict key split as "<section>.<index>.<field>" ("state.3.exp_avg").
struct Key {
  std::string section;
  size_t index;
  std::string field;
};

std::optional<Key> parse_key(const std::string& key) {
  const size_t first = key.find('.');
  if (first == std::string::npos) return std::nullopt;
  const size_t second = key.find('.', first + 1);
  if (second == std::string::npos || second + 1 == key.size()) return std::nullopt;
  Key parsed{key.substr(0, first), 0, key.substr(second + 1)};
  if (parsed.section != "group" && parsed.section != "state") return std::nullopt;
  const char* begin = key.data() + first + 1;
  const char* end = key.data() + second;
  const auto [stop, error] = std::from_chars(begin, end, parsed.index);
  if (begin == end || error != std::errc() || stop != end) return std::nullopt;
  return parsed;
}

std::string count(size_t n, const std::string& noun) { return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s"); }

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

// "group.<g>.params" must list exactly the indices [begin, end) of this optimizer's group g.
void check_group_indices(const std::string& op, const std::string& key, const Tensor& t, size_t group, size_t begin,
                         size_t end) {
  if (t.dtype() != kInt64 || t.dim() != 1)
    fail("{}: {} must be a 1-D int64 tensor, got {} {}", op, key, dtype_name(t.dtype()), shape_str(t.shape()));
  if (t.numel() != static_cast<int64_t>(end - begin))
    fail("{}: parameter group {} has {}, the checkpoint's has {}", op, group, count(end - begin, "parameter"),
         t.numel());
  const std::vector<int64_t> indices = t.to_vector<int64_t>();
  for (size_t j = 0; j < indices.size(); ++j)
    if (indices[j] != static_cast<int64_t>(begin + j))
      fail("{}: {} lists parameter {} at position {}, expected {}", op, key, indices[j], j, begin + j);
}

int64_t read_step(const std::string& op, const std::string& key, const Tensor& t) {
  if (t.dtype() != kInt64 || t.numel() != 1)
    fail("{}: {} must be one int64 value, got {} {}", op, key, dtype_name(t.dtype()), shape_str(t.shape()));
  const int64_t step = t.to_vector<int64_t>()[0];
  if (step < 1) fail("{}: {} is {}, expected >= 1", op, key, step);
  return step;
}

void check_buffer(const std::string& op, const std::string& key, const Tensor& t, size_t index, const Tensor& param) {
  if (t.shape() != param.shape())
    fail("{}: {} has shape {}, parameter {} has shape {}", op, key, shape_str(t.shape()), index,
         shape_str(param.shape()));
  if (!is_floating(t.dtype())) fail("{}: {} is {}, expected floating point", op, key, dtype_name(t.dtype()));
}

}  // namespace

Optimizer::Optimizer(std::string name, const std::vector<std::vector<Tensor>>& groups) : name_(std::move(name)) {
  group_begin_.push_back(0);
  std::unordered_set<const TensorImpl*> seen;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (const Tensor& p : groups[g]) {
      const std::string where = fmt::format("{}: parameter {} (group {})", name_, params_.size(), g);
      if (!p.defined()) fail("{} is undefined", where);
      if (!is_floating(p.dtype())) fail("{} is {}, expected a floating-point tensor", where, dtype_name(p.dtype()));
      if (!p.is_contiguous()) fail("{} {} is not contiguous", where, shape_str(p.shape()));
      if (!seen.insert(p.impl_ptr().get()).second) fail("{} appears more than once in the parameter list", where);
      params_.push_back(p);
    }
    group_begin_.push_back(params_.size());
  }
  if (params_.empty()) fail("{}: got an empty parameter list", name_);
  state_.resize(params_.size());
}

Optimizer::~Optimizer() = default;

void Optimizer::zero_grad() {
  for (const Tensor& p : params_) p.set_grad(Tensor());
}

void Optimizer::set_lr(double lr) {
  for (size_t g = 0; g < num_param_groups(); ++g) set_group_hyperparameters(g, {{"lr", lr}});
}

double Optimizer::lr() const {
  for (const auto& [name, value] : group_hyperparameters(0))
    if (name == "lr") return value;
  fail("{}: has no learning rate", name_);
}

Tensor Optimizer::prepare_update(size_t i) {
  const Tensor& p = params_[i];
  Tensor grad = p.grad();
  if (!grad.defined()) return grad;
  auto where = [&] { return fmt::format("{}: parameter {} {}", name_, i, shape_str(p.shape())); };
  if (!p.is_contiguous()) fail("{} is not contiguous", where());
  if (grad.shape() != p.shape()) fail("{} has a gradient of shape {}", where(), shape_str(grad.shape()));
  if (grad.dtype() != p.dtype())
    fail("{} is {} but its gradient is {}", where(), dtype_name(p.dtype()), dtype_name(grad.dtype()));
  for (Tensor& buffer : state_[i].buffers)
    if (buffer.dtype() != p.dtype()) buffer = cast_copy(buffer, p.dtype());
  p.bump_version();  // the caller updates p in place: a graph that saved the old values must not run
  return contiguous_copy(grad);
}

std::map<std::string, Tensor> Optimizer::state_dict() const {
  std::map<std::string, Tensor> out;
  for (size_t g = 0; g < num_param_groups(); ++g) {
    const std::string prefix = fmt::format("group.{}.", g);
    out.emplace(prefix + "params", arange(static_cast<int64_t>(group_begin(g)), static_cast<int64_t>(group_end(g))));
    for (const auto& [name, value] : group_hyperparameters(g))
      out.emplace(prefix + name, scalar_tensor(value, kFloat64));
  }
  const std::vector<std::string> names = buffer_names();
  for (size_t i = 0; i < state_.size(); ++i) {
    const ParamState& s = state_[i];
    if (s.step == 0) continue;
    const std::string prefix = fmt::format("state.{}.", i);
    out.emplace(prefix + "step", from_vector<int64_t>({s.step}, Shape{}));
    for (size_t b = 0; b < s.buffers.size(); ++b) out.emplace(prefix + names[b], s.buffers[b].detach());
  }
  return out;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& dict) { load_state(dict, false); }

void Optimizer::load_state(const std::map<std::string, Tensor>& dict, bool adopt) {
  const std::string op = name_ + ".load_state_dict";
  const size_t groups = num_param_groups(), n = params_.size();
  const std::vector<std::string> names = buffer_names();

  // Pass 1: validate everything into temporaries, so a bad dict changes nothing.
  std::vector<std::map<std::string, double>> hyper(groups);
  std::vector<bool> has_params(groups, false);
  std::vector<std::map<std::string, Tensor>> buffers(n);
  std::vector<int64_t> steps(n, 0);
  std::vector<std::string> unexpected, missing;
  size_t checkpoint_groups = 0;
  for (const auto& [key, _] : dict)
    if (auto k = parse_key(key); k && k->section == "group")
      checkpoint_groups = std::max(checkpoint_groups, k->index + 1);
  if (checkpoint_groups != 0 && checkpoint_groups != groups)
    fail("{}: the checkpoint has {}, the optimizer {}", op, count(checkpoint_groups, "parameter group"), groups);
  for (const auto& [key, t] : dict) {
    const std::optional<Key> parsed = parse_key(key);
    if (!parsed) {
      unexpected.push_back(key);
      continue;
    }
    if (!t.defined()) fail("{}: {} is undefined", op, key);
    const size_t index = parsed->index;
    const std::string& field = parsed->field;
    if (parsed->section == "group") {
      if (field == "params") {
        check_group_indices(op, key, t, index, group_begin(index), group_end(index));
        has_params[index] = true;
        continue;
      }
      bool known = false;
      for (const auto& [name, _] : group_hyperparameters(index)) known = known || name == field;
      if (!known) {
        unexpected.push_back(key);
        continue;
      }
      if (t.numel() != 1) fail("{}: {} must hold one value, got shape {}", op, key, shape_str(t.shape()));
      hyper[index][field] = t.item();
      continue;
    }
    // section == "state"
    if (index >= n) fail("{}: {} refers to parameter {}, the optimizer has {} parameters", op, key, index, n);
    if (field == "step") {
      steps[index] = read_step(op, key, t);
      continue;
    }
    if (std::find(names.begin(), names.end(), field) == names.end()) {
      unexpected.push_back(key);
      continue;
    }
    check_buffer(op, key, t, index, params_[index]);
    buffers[index][field] = t;
  }
  for (size_t g = 0; g < groups; ++g) {
    const std::string prefix = fmt::format("group.{}.", g);
    if (!has_params[g]) missing.push_back(prefix + "params");
    for (const auto& [name, _] : group_hyperparameters(g))
      if (!hyper[g].count(name)) missing.push_back(prefix + name);
  }
  for (size_t i = 0; i < n; ++i) {
    // A parameter's buffers are all there or not yet created (SGD without momentum has none).
    if (buffers[i].empty()) continue;
    const std::string prefix = fmt::format("state.{}.", i);
    if (steps[i] == 0) missing.push_back(prefix + "step");
    for (const std::string& name : names)
      if (!buffers[i].count(name)) missing.push_back(prefix + name);
  }
  if (!missing.empty() || !unexpected.empty()) {
    std::string message = op + ":";
    if (!missing.empty()) message += " missing keys: " + join(missing) + ";";
    if (!unexpected.empty()) message += " unexpected keys: " + join(unexpected) + ";";
    fail("{}", message);
  }

  // Pass 2: commit. Hyperparameters are validated by the optimizer as they are set; on a bad value
  // the previous ones are put back.
  std::vector<std::map<std::string, double>> previous(groups);
  for (size_t g = 0; g < groups; ++g)
    for (const auto& [name, value] : group_hyperparameters(g)) previous[g][name] = value;
  size_t g = 0;
  try {
    for (; g < groups; ++g) set_group_hyperparameters(g, hyper[g]);
  } catch (const Error& e) {
    while (g-- > 0) set_group_hyperparameters(g, previous[g]);
    fail("{}: {}", op, e.what());
  }
  for (size_t i = 0; i < n; ++i) {
    ParamState s;
    s.step = steps[i];
    // Fresh buffers in the parameter's dtype: nothing is shared with the caller's tensors (unless
    // they are load's own, read from the file for this).
    for (const std::string& name : names)
      if (auto it = buffers[i].find(name); it != buffers[i].end()) {
        const Tensor& t = it->second;
        const bool as_is = adopt && t.dtype() == params_[i].dtype() && t.is_contiguous() && t.offset() == 0;
        s.buffers.push_back(as_is ? t : cast_copy(t, params_[i].dtype()));
      }
    state_[i] = std::move(s);
  }
}

void Optimizer::save(const std::string& path) const {
  io::save_safetensors(path, state_dict(), {{"format", "latent.optim"}, {"optimizer", name_}});
}

void Optimizer::load(const std::string& path) {
  io::SafetensorsFile file = io::read_safetensors(path);
  // Model weights and other files would fail on their keys anyway; this names the real problem.
  if (auto it = file.metadata.find("format"); it != file.metadata.end() && it->second != "latent.optim")
    fail("{}.load: {} holds '{}' data, not optimizer state ('latent.optim')", name_, path, it->second);
  load_state(file.tensors, true);
}

}  // namespace latent::optim

// gradcheck: analytic gradient of a random projection of the output vs central differences.
#include "gradcheck.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "../core/random.hpp"
#include "../core/strided.hpp"
#include "grad_mode.hpp"
#include "node.hpp"
#include "ops.hpp"

namespace latent::autograd {
namespace {

// One tensor whose gradient is checked: perturbed in place, its analytic gradient read from .grad.
struct Target {
  Tensor tensor;
  std::string label;      // "input 1", "parameter 'weight'"
  Tensor original;        // for a float64 copy of an input: the caller's tensor (else undefined)
};

// The caller's tensors keep their .grad: it is cleared for the check and put back afterwards.
class GradStash {
 public:
  void clear(const Tensor& t) {
    if (!t.is_leaf()) return;
    for (const auto& [kept, _] : saved_)
      if (kept.is_same(t)) return;
    saved_.emplace_back(t, t.grad());
    t.set_grad(Tensor());
  }
  ~GradStash() {
    for (const auto& [t, grad] : saved_) t.set_grad(grad);
  }

 private:
  std::vector<std::pair<Tensor, Tensor>> saved_;
};

double projected(const GradcheckFn& fn, const std::vector<Tensor>& args, const Tensor& weights) {
  NoGradGuard no_grad;
  return sum(mul(fn(args), weights)).item();
}

bool check(const std::vector<std::pair<std::string, Tensor>>& parameters, const GradcheckFn& fn,
           const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  const std::string who = "gradcheck(" + options.name + ")";
  std::vector<Tensor> args = inputs;
  std::vector<Target> targets;
  GradStash stash;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined() || !t.requires_grad()) continue;
    // In place when possible (fn may also reach t directly); a copy when perturbing t would also
    // move another input (a view or detached alias of it), which would blur their derivatives.
    bool aliased = false;
    for (const Tensor& other : inputs) aliased = aliased || (!other.is_same(t) && t.shares_storage(other));
    if (t.is_leaf() && t.dtype() == kFloat64 && !aliased) {
      targets.push_back({t, "input " + std::to_string(i), Tensor()});
    } else {  // a float64 leaf copy, which fn sees only through its argument
      Tensor leaf = cast_copy(t.detach(), kFloat64);
      leaf.requires_grad_(true);
      args[i] = leaf;
      targets.push_back({leaf, "input " + std::to_string(i), t});
    }
    stash.clear(t);
  }
  for (const auto& [name, p] : parameters) {
    if (!p.requires_grad()) continue;
    if (p.dtype() != kFloat64)
      fail("{}: parameter '{}' is {}; parameters are perturbed in place, so call to(kFloat64) on the module first", who,
           name, dtype_name(p.dtype()));
    bool seen = false;
    for (const Target& t : targets) seen = seen || t.tensor.is_same(p);
    if (seen) continue;
    targets.push_back({p, "parameter '" + name + "'", Tensor()});
    stash.clear(p);
  }
  if (targets.empty())
    fail("{}: no input requires grad, so there is nothing to check (call requires_grad_() on the "
         "inputs, or use gradcheck_module for a module's parameters)",
         who);

  Tensor output;
  try {
    output = fn(args);
  } catch (const Error& e) {  // typically a float32 module meeting the float64 inputs
    const std::string message = e.what();
    fail("{}: fn threw on its float64 inputs: {}{}", who, message,
         message.find("float32") != std::string::npos ? "; if fn runs a float32 module, call to(kFloat64) on it" : "");
  }
  if (!output.defined()) fail("{}: fn returned an undefined tensor", who);
  if (output.dtype() != kFloat64)
    fail("{}: fn must compute in float64, its output is {} (a float32 module given float64 "
         "inputs: call to(kFloat64) on the module)",
         who, dtype_name(output.dtype()));
  if (!output.requires_grad())
    fail("{}: the output does not depend on any tensor being checked; a module's parameters are "
         "checked with gradcheck_module",
         who);
  Generator gen(0x6eadc4ec);
  const Tensor weights = randn(output.shape(), kFloat64, &gen);
  sum(mul(output, weights)).backward();
  for (const Target& t : targets)  // the copy was not what fn used: perturbing it would check nothing
    if (t.original.defined() && t.original.is_leaf() && t.original.grad().defined())
      fail("{}: {} ({} {}) is reached by fn directly, not through its argument; such tensors "
           "are perturbed in place and must be float64: call to(kFloat64) on the module",
           who, t.label, dtype_name(t.original.dtype()), shape_str(t.original.shape()));

  std::string first_bad;
  int64_t bad = 0, checked = 0;
  for (const Target& target : targets) {
    Tensor leaf = target.tensor;
    const Tensor grad = leaf.grad();
    const std::vector<double> analytic =
        grad.defined() ? grad.to_vector<double>() : std::vector<double>(static_cast<size_t>(leaf.numel()), 0.0);
    const int64_t step = options.max_per_input > 0
                             ? std::max<int64_t>(1, (leaf.numel() + options.max_per_input - 1) / options.max_per_input)
                             : int64_t{1};
    double* data = leaf.data<double>();
    int64_t flat = 0;
    for_each_offset(leaf, [&](int64_t off) {
      const int64_t at = flat++;
      if (at % step != 0) return;
      const double original = data[off];
      double plus = 0, minus = 0;
      try {
        data[off] = original + options.eps;
        plus = projected(fn, args, weights);
        data[off] = original - options.eps;
        minus = projected(fn, args, weights);
      } catch (...) {
        data[off] = original;
        throw;
      }
      data[off] = original;
      const double numerical = (plus - minus) / (2 * options.eps);
      const double a = analytic[static_cast<size_t>(at)];
      ++checked;
      if (std::abs(a - numerical) <= options.atol + options.rtol * std::abs(numerical)) return;
      if (bad++ == 0)
        first_bad = fmt::format("{} element {} {}: analytic {:.10g} vs numerical {:.10g}", target.label, at,
                                index_str(at, leaf.shape()), a, numerical);
    });
  }
  if (bad > 0)
    fail("{}: {} (tolerance atol {:g} + rtol {:g} * |numerical|, eps {:g}); {} of {} checked "
         "elements are off",
         who, first_bad, options.atol, options.rtol, options.eps, bad, checked);
  return true;
}

}  // namespace

bool gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  return check({}, fn, inputs, options);
}

bool gradcheck_parameters(const std::vector<std::pair<std::string, Tensor>>& parameters, const GradcheckFn& fn,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  return check(parameters, fn, inputs, options);
}

std::string module_label(const std::type_info& type, const std::string& path) {
  std::string name = type_name(type);
  const size_t scope = name.rfind("::", name.find('<'));
  if (scope != std::string::npos) name = name.substr(scope + 2);
  return path.empty() ? name : name + " '" + path + "'";
}

}  // namespace latent::autograd

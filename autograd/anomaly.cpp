// Anomaly mode: the flag, the per-thread module labels, and the NaN/Inf scans with their messages.
#include "anomaly.hpp"

#include <cmath>

#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "node.hpp"

namespace latent::autograd {

namespace detail {
std::atomic<bool> anomaly_enabled{false};
}

namespace {

thread_local std::vector<std::shared_ptr<const std::string>> module_labels;
thread_local bool running_backward = false;

// How many values of a tensor are NaN or infinite, and the flat (row-major) index of the first one.
struct NonFinite {
  int64_t nan = 0, inf = 0, first = -1;
  bool any() const { return nan + inf > 0; }
  void merge(const NonFinite& other) {
    if (other.first >= 0 && (first < 0 || other.first < first)) first = other.first;
    nan += other.nan;
    inf += other.inf;
  }
};

NonFinite scan(const Tensor& t) {
  if (!t.defined() || !is_floating(t.dtype()) || t.numel() == 0) return {};
  const Tensor c = t.is_contiguous() ? t : contiguous_copy(t);
  return dispatch_floating(c.dtype(), "anomaly", [&]<class T>() {
    constexpr int64_t grain = 1 << 16;
    const int64_t n = c.numel();
    std::vector<NonFinite> chunks(static_cast<size_t>((n + grain - 1) / grain));
    const T* p = c.data<T>();
    parallel_for(n, grain, [&](int64_t begin, int64_t end) {
      NonFinite& part = chunks[static_cast<size_t>(begin / grain)];
      for (int64_t i = begin; i < end; ++i) {
        if (std::isfinite(p[i])) [[likely]] continue;
        ++(std::isnan(p[i]) ? part.nan : part.inf);
        if (part.first < 0) part.first = i;
      }
    });
    NonFinite total;
    for (const NonFinite& part : chunks) total.merge(part);
    return total;
  });
}

std::string kind(const NonFinite& f) { return f.nan && f.inf ? "NaN and Inf" : f.nan ? "NaN" : "Inf"; }

std::string details(const NonFinite& f, const Tensor& t) {
  return " (" + std::to_string(f.nan + f.inf) + " of " + std::to_string(t.numel()) + " values, first at " +
         index_str(f.first, t.shape()) + ")";
}

std::string module_clause(const std::shared_ptr<const std::string>& label, const char* lead) {
  return label ? std::string("; ") + lead + " " + *label : std::string();
}

bool is_view_of_input(const Tensor& out, const std::vector<Tensor>& inputs) {
  for (const Tensor& in : inputs)
    if (in.defined() && out.shares_storage(in)) return true;
  return false;
}

}  // namespace

void set_detect_anomaly(bool on) { detail::anomaly_enabled.store(on, std::memory_order_relaxed); }

DetectAnomalyGuard::DetectAnomalyGuard(bool on) : previous_(is_anomaly_enabled()) { set_detect_anomaly(on); }
DetectAnomalyGuard::~DetectAnomalyGuard() { set_detect_anomaly(previous_); }

ModuleLabelScope::ModuleLabelScope(std::string label) {
  module_labels.push_back(std::make_shared<const std::string>(std::move(label)));
}
ModuleLabelScope::~ModuleLabelScope() { module_labels.pop_back(); }

std::shared_ptr<const std::string> current_module_label() {
  return module_labels.empty() ? nullptr : module_labels.back();
}

bool in_backward() { return running_backward; }
BackwardScope::BackwardScope() : previous_(running_backward) { running_backward = true; }
BackwardScope::~BackwardScope() { running_backward = previous_; }

namespace {

// The forward rule (see anomaly.hpp) for one result `what` of op `name` and its named inputs; `where`
// ends the message ("; it ran in module ..." or nothing).
void check_result(const std::string& name, const std::string& what, const Tensor& out,
                  const std::vector<NamedTensor>& inputs, const std::string& where) {
  const NonFinite found = scan(out);
  if (!found.any()) return;
  // Which input already held a non-finite value: that decides whether an Inf is new, and a NaN
  // produced from a poisoned input (a parameter gone NaN) points at that input.
  std::string held;
  for (size_t i = 0; i < inputs.size() && held.empty(); ++i) {
    const NonFinite in = scan(inputs[i].tensor);
    if (in.any()) held = "; " + inputs[i].name + " " + shape_str(inputs[i].tensor.shape()) + " already held " + kind(in);
  }
  if (found.nan == 0 && !held.empty()) return;  // an infinity carried along, not made here
  fail("anomaly: forward of '{}' produced {} in {} {}{}{}{}", name, kind(found), what, shape_str(out.shape()),
       details(found, out), held, where);
}

void check_gradient(const std::string& name, const std::string& what, const Tensor& grad, const std::string& held_in,
                    const NonFinite& held, const std::string& where) {
  const NonFinite found = scan(grad);
  if (!found.any()) return;
  fail("anomaly: backward of '{}' produced {} in the gradient of {} {}{}{}{}", name, kind(found), what,
       shape_str(grad.shape()), details(found, grad),
       held.any() ? "; the gradient it received" + held_in + " already held " + kind(held) : std::string(), where);
}

std::string module_clause(const std::string& module, const char* lead) {
  return module.empty() ? std::string() : std::string("; ") + lead + " " + module;
}

}  // namespace

void check_forward(const std::string& name, const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs) {
  if (running_backward) return;
  std::vector<NamedTensor> named;
  for (size_t i = 0; i < inputs.size(); ++i) named.push_back({"its input " + std::to_string(i), inputs[i]});
  for (size_t o = 0; o < outputs.size(); ++o) {
    const Tensor& out = outputs[o];
    if (!out.defined() || is_view_of_input(out, inputs)) continue;
    const std::string which = outputs.size() > 1 ? "output " + std::to_string(o) : std::string("its output");
    check_result(name, which, out, named, module_clause(current_module_label(), "it ran in module"));
  }
}

void check_forward_part(const std::string& op, const NamedTensor& out, const std::vector<NamedTensor>& inputs,
                        const std::string& module) {
  check_result(op, out.name, out.tensor, inputs, module_clause(module, "it ran in module"));
}

void check_backward_part(const std::string& op, const NamedTensor& grad, const Tensor& incoming,
                         const std::string& module) {
  if (!scan(grad.tensor).any()) return;
  check_gradient(op, grad.name, grad.tensor, "", scan(incoming), module_clause(module, "forward ran in module"));
}

void check_backward(const Node& node, const std::vector<Tensor>& input_grads, const std::vector<bool>& flowing,
                    const std::vector<Tensor>& incoming) {
  for (size_t i = 0; i < input_grads.size(); ++i) {
    if (!flowing[i] || !input_grads[i].defined() || !scan(input_grads[i]).any()) continue;
    NonFinite held;
    std::string held_in;
    for (size_t g = 0; g < incoming.size() && !held.any(); ++g) {
      held = scan(incoming[g]);
      if (incoming.size() > 1) held_in = " for output " + std::to_string(g);
    }
    check_gradient(node.name(), "input " + std::to_string(i), input_grads[i], held_in, held,
                   module_clause(node.forward_module, "forward ran in module"));
  }
}

}  // namespace latent::autograd

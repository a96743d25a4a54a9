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

void check_forward(const std::string& name, const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs) {
  if (running_backward) return;
  for (size_t o = 0; o < outputs.size(); ++o) {
    const Tensor& out = outputs[o];
    if (!out.defined() || is_view_of_input(out, inputs)) continue;
    const NonFinite found = scan(out);
    if (!found.any()) continue;
    // Which input already held a non-finite value: that decides whether an Inf is new, and a NaN
    // produced from a poisoned input (a parameter gone NaN) points at that input.
    std::string held;
    for (size_t i = 0; i < inputs.size() && held.empty(); ++i) {
      const NonFinite in = scan(inputs[i]);
      if (in.any())
        held = "; its input " + std::to_string(i) + " " + shape_str(inputs[i].shape()) + " already held " + kind(in);
    }
    if (found.nan == 0 && !held.empty()) continue;  // an infinity carried along, not made here
    const std::string which = outputs.size() > 1 ? "output " + std::to_string(o) : std::string("its output");
    throw Error("anomaly: forward of '" + name + "' produced " + kind(found) + " in " + which + " " +
                shape_str(out.shape()) + details(found, out) + held +
                module_clause(current_module_label(), "it ran in module"));
  }
}

void check_backward(const Node& node, const std::vector<Tensor>& input_grads, const std::vector<bool>& flowing,
                    const std::vector<Tensor>& incoming) {
  for (size_t i = 0; i < input_grads.size(); ++i) {
    if (!flowing[i] || !input_grads[i].defined()) continue;
    const NonFinite found = scan(input_grads[i]);
    if (!found.any()) continue;
    std::string held;
    for (size_t g = 0; g < incoming.size() && held.empty(); ++g) {
      const NonFinite in = scan(incoming[g]);
      if (in.any())
        held = "; the gradient it received" + (incoming.size() > 1 ? " for output " + std::to_string(g) : std::string()) +
               " already held " + kind(in);
    }
    throw Error("anomaly: backward of '" + node.name() + "' produced " + kind(found) + " in the gradient of input " +
                std::to_string(i) + " " + shape_str(input_grads[i].shape()) + details(found, input_grads[i]) + held +
                module_clause(node.forward_module, "forward ran in module"));
  }
}

}  // namespace latent::autograd

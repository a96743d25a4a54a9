// Recording the graph: edges from an op's result back to whatever produced its inputs.
#include "node.hpp"

#include <cxxabi.h>

#include <cstdlib>

#include "../core/elementwise.hpp"
#include "../core/strided.hpp"
#include "anomaly.hpp"
#include "grad_mode.hpp"
#include "ops.hpp"

namespace latent::autograd {
namespace {

std::atomic<uint64_t> next_sequence_nr{0};

// The pending releases of one teardown. It lives on the stack of the outermost releasing call;
// a raw thread_local pointer (trivially destructible) lets nested destructors find it.
struct Teardown {
  std::vector<std::shared_ptr<Node>> nodes;
  std::vector<BackwardFn> closures;
  std::vector<Tensor> tensors;

  void add(std::vector<Edge>&& edges) {
    for (Edge& e : edges)
      if (e.node) nodes.push_back(std::move(e.node));
  }
  void add(BackwardFn&& fn) { closures.push_back(std::move(fn)); }
  void add(std::vector<Tensor>&& ts) {
    for (Tensor& t : ts) tensors.push_back(std::move(t));
  }

  // Each item is moved out before it dies: its destructor may append to these lists.
  void drain() {
    while (!nodes.empty() || !closures.empty() || !tensors.empty()) {
      if (!nodes.empty()) {
        std::shared_ptr<Node> last = std::move(nodes.back());
        nodes.pop_back();
      } else if (!closures.empty()) {
        BackwardFn last = std::move(closures.back());
        closures.pop_back();
      } else {
        Tensor last = std::move(tensors.back());
        tensors.pop_back();
      }
    }
  }
};

thread_local Teardown* active_teardown = nullptr;

template <class Payload> void release(Payload&& payload) {
  if (active_teardown) {
    active_teardown->add(std::move(payload));
    return;
  }
  Teardown teardown;
  active_teardown = &teardown;
  teardown.add(std::move(payload));
  teardown.drain();
  active_teardown = nullptr;
}

}  // namespace

std::string type_name(const std::type_info& type) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> demangled(abi::__cxa_demangle(type.name(), nullptr, nullptr, &status),
                                                   std::free);
  std::string name = status == 0 && demangled ? std::string(demangled.get()) : std::string(type.name());
  // A test's or example's op in an unnamed namespace reads as "ScaledTanh", not "(anonymous namespace)::ScaledTanh".
  const std::string anonymous = "(anonymous namespace)::";
  for (size_t at; (at = name.find(anonymous)) != std::string::npos;) name.erase(at, anonymous.size());
  return name;
}

void release_iteratively(std::vector<Edge>&& edges) { release(std::move(edges)); }
void release_iteratively(BackwardFn&& fn) { release(std::move(fn)); }
void release_iteratively(std::vector<Tensor>&& tensors) { release(std::move(tensors)); }

void SavedVersions::save(const std::vector<Tensor>& saved) {
  for (const Tensor& t : saved)
    if (t.defined()) entries_.push_back({t.storage(), t.version(), t.shape()});
}

void SavedVersions::name_roles(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs) {
  for (Entry& e : entries_) {
    auto find = [&](const std::vector<Tensor>& ts, const char* kind) {
      for (size_t i = 0; i < ts.size(); ++i)
        if (ts[i].defined() && ts[i].storage() == e.storage) {
          e.role = std::string(kind) + " " + std::to_string(i);
          return true;
        }
      return false;
    };
    if (!find(inputs, "input")) find(outputs, "output");
  }
}

void SavedVersions::throw_modified(const std::string& op, const Entry& e) {
  fail("{} backward: saved {} (shape {}) was modified in place after the forward (version {}, now {})", op, e.role,
       shape_str(e.shape), e.version, e.storage->version());
}

Node::Node()
    : sequence_nr(next_sequence_nr.fetch_add(1, std::memory_order_relaxed)), matmul_precision(get_matmul_precision()) {}

Node::~Node() { release_iteratively(std::move(next_edges)); }

void LambdaNode::release_saved() {
  saved_versions.clear();
  if (!fn_) return;
  BackwardFn fn = std::move(fn_);
  fn_ = nullptr;
  release_iteratively(std::move(fn));
}

bool owns_its_memory(const Tensor& t) {
  return t.impl_ptr().use_count() == 1 && t.storage().use_count() == 1 && t.is_contiguous();
}

void add_in_place(const Tensor& dst, const Tensor& src) {
  const Tensor sc = contiguous_copy(src);
  dispatch_floating(dst.dtype(), "add_in_place", [&]<class T>() {
    T* out = dst.data<T>();
    const T* in = sc.data<T>();
    parallel_for(dst.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] += in[i];
    });
  });
  dst.bump_version();
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>&& grad_outputs) {
  Tensor g = std::move(grad_outputs.at(0));
  if (!g.defined()) return {};
  if (g.shape() != variable_->shape)
    fail("AccumulateGrad: gradient of shape {} for a leaf of shape {}", shape_str(g.shape()),
         shape_str(variable_->shape));
  Tensor variable(variable_);
  Tensor existing = variable.grad();
  if (!existing.defined()) {
    // The leaf must own its gradient: a gradient shared with another tensor or a view could be
    // changed behind its back by in-place updates (zero_grad, clipping).
    variable.set_grad(owns_its_memory(g) ? g : cast_copy(g, g.dtype()));
  } else if (existing.is_contiguous() && existing.dtype() == g.dtype()) {
    // In place: accumulating over micro-batches allocates nothing beyond a contiguous copy of g.
    add_in_place(existing, g);
  } else {
    existing.copy_(add(existing, g));
  }
  return {};
}

std::vector<Tensor> LambdaNode::apply(std::vector<Tensor>&& grad_outputs) {
  if (!fn_) fail("{}: backward through a graph whose saved tensors were freed; pass retain_graph=true to the first backward", name_);
  return fn_(grad_outputs);
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  TensorImpl& impl = t.impl();
  if (impl.grad_fn) return {impl.grad_fn, impl.output_nr};
  auto accumulator = impl.grad_accumulator.lock();
  if (!accumulator) {
    accumulator = std::make_shared<AccumulateGrad>(t.impl_ptr());
    impl.grad_accumulator = accumulator;
  }
  return {accumulator, 0};
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool any_requires_grad(std::initializer_list<Tensor> inputs) {
  if (!GradMode::is_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {

void mark_outputs(std::vector<Tensor>& outs, const std::shared_ptr<Node>& node) {
  if (is_anomaly_enabled()) [[unlikely]]
    node->forward_module = current_module_label();
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!outs[i].defined()) continue;
    TensorImpl& impl = outs[i].impl();
    impl.grad_fn = node;
    impl.output_nr = static_cast<int>(i);
    impl.requires_grad = true;
  }
}

std::vector<Tensor> attach(const char* name, std::vector<Tensor> outs, const std::vector<Tensor>& inputs,
                           const std::vector<Tensor>& saved, BackwardFn fn) {
  if (!any_requires_grad(inputs)) return outs;
  auto node = std::make_shared<LambdaNode>(name, std::move(fn));
  if (!saved.empty()) {
    node->saved_versions.save(saved);
    node->saved_versions.name_roles(inputs, outs);
  }
  node->num_outputs = static_cast<int>(outs.size());
  node->next_edges.reserve(inputs.size());
  for (const Tensor& t : inputs) node->next_edges.push_back(gradient_edge(t));
  mark_outputs(outs, node);
  return outs;
}

}  // namespace

void set_history(std::vector<Tensor>& outs, const std::shared_ptr<Node>& node) {
  // Anomaly checks of Function outputs happen in Function::apply, which has the inputs at hand.
  mark_outputs(outs, node);
}

std::vector<Tensor> record_multi(const char* name, std::vector<Tensor> outs, const std::vector<Tensor>& inputs,
                                 const std::vector<Tensor>& saved, BackwardFn fn) {
  if (is_anomaly_enabled()) [[unlikely]]
    check_forward(name, outs, inputs);
  return attach(name, std::move(outs), inputs, saved, std::move(fn));
}

Tensor record(const char* name, Tensor out, const std::vector<Tensor>& inputs, const std::vector<Tensor>& saved,
              UnaryBackwardFn fn) {
  if (is_anomaly_enabled()) [[unlikely]]
    check_forward(name, {out}, inputs);
  if (!any_requires_grad(inputs)) return out;
  return attach(name, {std::move(out)}, inputs, saved,
                [fn = std::move(fn)](const std::vector<Tensor>& grads) { return fn(grads[0]); })[0];
}

}  // namespace latent::autograd

// The backward engine: count how many gradients each node waits for, then run nodes as their
// gradients complete, newest first. An explicit work list, so graph depth is limited by memory only.
#include <queue>
#include <unordered_map>

#include "../core/factory.hpp"
#include "anomaly.hpp"
#include "grad_mode.hpp"
#include "node.hpp"
#include "ops.hpp"

namespace latent {
namespace autograd {
namespace {

struct NewestFirst {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

// Number of edges from nodes of the graph into each node (iterative DFS).
std::unordered_map<Node*, int> count_dependencies(const std::vector<Node*>& roots) {
  std::unordered_map<Node*, int> dependencies;
  std::vector<Node*> stack;
  std::unordered_map<Node*, bool> seen;
  for (Node* r : roots)
    if (!seen[r]) { seen[r] = true; stack.push_back(r); }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.node) continue;
      ++dependencies[e.node.get()];
      if (!seen[e.node.get()]) { seen[e.node.get()] = true; stack.push_back(e.node.get()); }
    }
  }
  return dependencies;
}

// A node input's gradient, summed over the nodes that use it: into the first gradient's memory when
// nothing else sees it, so that a residual stream's gradient, a sum of several per layer, takes no new
// tensor per sum.
void accumulate(Tensor& slot, Tensor g) {
  if (!slot.defined()) {
    slot = std::move(g);
    return;
  }
  const bool floating = slot.dtype() == kFloat32 || slot.dtype() == kFloat64;
  if (floating && owns_its_memory(slot) && slot.dtype() == g.dtype() && slot.shape() == g.shape() &&
      !slot.shares_storage(g))
    add_in_place(slot, g);
  else
    slot = add(slot, g);
}

}  // namespace

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grad_roots, bool retain_graph) {
  NoGradGuard no_grad;  // gradients of gradients are not recorded
  BackwardScope backward_scope;  // anomaly mode checks what nodes return, not the ops inside them
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::vector<std::shared_ptr<Node>> root_nodes;  // keep roots alive while we run
  for (size_t i = 0; i < roots.size(); ++i) {
    const Edge edge = gradient_edge(roots[i]);
    if (!edge.node) fail("backward: tensor does not require grad and has no grad_fn");
    auto& buffer = buffers[edge.node.get()];
    buffer.resize(static_cast<size_t>(edge.node->num_outputs));
    accumulate(buffer[static_cast<size_t>(edge.input_nr)], grad_roots[i]);
    root_nodes.push_back(edge.node);
  }
  std::vector<Node*> raw_roots;
  for (auto& n : root_nodes) raw_roots.push_back(n.get());
  auto dependencies = count_dependencies(raw_roots);

  std::priority_queue<Node*, std::vector<Node*>, NewestFirst> ready;
  for (Node* r : raw_roots)
    if (dependencies[r] == 0) ready.push(r);
  // A root may also be reached from another root: it then waits for that gradient too.
  std::unordered_map<Node*, bool> queued;
  for (Node* r : raw_roots) queued[r] = dependencies[r] == 0;

  while (!ready.empty()) {
    Node* node = ready.top();
    ready.pop();
    std::vector<Tensor> grads = std::move(buffers[node]);
    buffers.erase(node);
    grads.resize(static_cast<size_t>(node->num_outputs));
    const bool anomaly = is_anomaly_enabled();
    const std::vector<Tensor> incoming = anomaly ? grads : std::vector<Tensor>();
    node->saved_versions.check(node->name());
    std::vector<Tensor> input_grads;
    {
      MatmulPrecisionGuard forward_precision(node->matmul_precision);
      input_grads = node->apply(std::move(grads));
    }
    if (input_grads.size() != node->next_edges.size())
      fail("{}: backward returned {} gradients for {} inputs", node->name(), input_grads.size(),
           node->next_edges.size());
    if (anomaly) [[unlikely]] {
      std::vector<bool> flowing;
      for (const Edge& e : node->next_edges) flowing.push_back(e.node != nullptr);
      check_backward(*node, input_grads, flowing, incoming);
    }
    if (!retain_graph) node->release_saved();
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.node) continue;
      Node* next = e.node.get();
      auto& buffer = buffers[next];
      buffer.resize(static_cast<size_t>(next->num_outputs));
      if (input_grads[i].defined()) accumulate(buffer[static_cast<size_t>(e.input_nr)], input_grads[i]);
      if (--dependencies[next] == 0 && !queued[next]) {
        queued[next] = true;
        ready.push(next);
      }
    }
  }
}

}  // namespace autograd

Tensor& Tensor::requires_grad_(bool on) {
  if (on && !is_floating(dtype())) fail("requires_grad_: only floating-point tensors can require grad, got int64");
  if (!on && !is_leaf()) fail("requires_grad_: cannot turn off requires_grad on a non-leaf tensor; use detach()");
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }

void Tensor::set_grad(const Tensor& grad) const {
  if (grad.defined() && grad.shape() != shape())
    fail("set_grad: gradient shape {} differs from tensor shape {}", shape_str(grad.shape()), shape_str(shape()));
  impl().grad = grad.defined() ? grad.impl_ptr() : nullptr;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = storage();
  impl->shape = shape();
  impl->strides = strides();
  impl->offset = offset();
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

void Tensor::backward(bool retain_graph) const {
  if (numel() != 1)
    fail("backward: implicit seed needs a one-element tensor, got shape {}; pass a grad_output", shape_str(shape()));
  backward(ones(shape(), dtype()), retain_graph);
}

void Tensor::backward(const Tensor& grad_output, bool retain_graph) const {
  if (grad_output.shape() != shape())
    fail("backward: grad_output shape {} differs from {}", shape_str(grad_output.shape()), shape_str(shape()));
  if (grad_output.dtype() != dtype())
    fail("backward: grad_output dtype {} differs from {}", dtype_name(grad_output.dtype()), dtype_name(dtype()));
  autograd::run_backward({*this}, {grad_output}, retain_graph);
}

}  // namespace latent

// Graph nodes: each differentiable result points at the Node that made it; a Node's edges point at
// the nodes that made its inputs (or at a leaf's AccumulateGrad). The engine walks these edges.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

#include "../core/matmul_precision.hpp"
#include "../core/tensor.hpp"
#include "anomaly.hpp"

namespace latent::autograd {

class Node;

// Where the gradient of one input goes: output slot `input_nr` of `node` (null: no gradient needed).
struct Edge {
  std::shared_ptr<Node> node;
  int input_nr = 0;
};

// The versions (Storage::version) of the tensors a node saved for backward, taken at save time. An
// in-place write to a saved tensor, or to anything sharing its storage, between the forward and the
// backward would make the backward differentiate values the forward never saw; check() refuses
// instead, naming the op and the tensor. One integer compare per saved tensor.
class SavedVersions {
 public:
  void save(const std::vector<Tensor>& saved);  // undefined entries are skipped
  // Names each saved tensor after the first input, else output, whose storage it shares.
  void name_roles(const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs);
  void check(const std::string& op) const {
    for (const Entry& e : entries_)
      if (e.storage->version() != e.version) [[unlikely]]
        throw_modified(op, e);
  }
  void clear() { entries_.clear(); }

 private:
  struct Entry {
    std::shared_ptr<Storage> storage;
    uint64_t version;
    Shape shape;
    std::string role = "tensor";  // "input 1", "output 0", or "tensor" for intermediates
  };
  [[noreturn]] static void throw_modified(const std::string& op, const Entry& e);
  std::vector<Entry> entries_;
};

class Node {
 public:
  Node();
  virtual ~Node();  // releases next_edges iteratively (see release_iteratively)
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // One gradient per output in, one per next_edges entry out (undefined = zero / not needed).
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) = 0;
  // Drops tensors saved for backward; called after apply unless the graph is retained.
  virtual void release_saved() {}
  virtual std::string name() const = 0;

  std::vector<Edge> next_edges;
  SavedVersions saved_versions;  // checked by the engine before apply
  uint64_t sequence_nr;  // creation order: later nodes run first among the ready ones
  // The matmul precision in force when the forward ran: the engine runs apply() at it, so an op's
  // backward products take the precision of its forward (the MoE router, computed at kHighest inside
  // a bf16 step, keeps float32 gradients too) whatever the precision at the time of backward().
  MatmulPrecision matmul_precision;
  int num_outputs = 1;
  // Anomaly mode only (anomaly.hpp): the module whose forward recorded this node, for error messages.
  std::shared_ptr<const std::string> forward_module;
};

// The sink for a leaf tensor: adds incoming gradients into its .grad().
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> variable) : variable_(std::move(variable)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override;
  std::string name() const override { return "AccumulateGrad"; }

 private:
  std::shared_ptr<TensorImpl> variable_;
};

// A node whose backward is a closure; the closure owns what it saved and is destroyed on release.
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;
class LambdaNode final : public Node {
 public:
  LambdaNode(std::string name, BackwardFn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  ~LambdaNode() override { release_saved(); }
  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override;
  void release_saved() override;
  std::string name() const override { return name_; }

 private:
  std::string name_;
  BackwardFn fn_;
};

// Destroying a graph naively recurses once per node (tensor -> node -> edge -> node ..., or through
// the tensors a closure saved) and overflows the stack on long chains. Whatever a dying node owns
// that can keep other nodes alive is handed to these instead: the outermost call on a thread drains
// a work list in a loop, and nested destructions only append to it, so the stack depth stays constant.
void release_iteratively(std::vector<Edge>&& edges);
void release_iteratively(BackwardFn&& fn);
void release_iteratively(std::vector<Tensor>&& tensors);

// A readable C++ type name ("ScaledTanh", not "10ScaledTanh"), for node names in error messages.
std::string type_name(const std::type_info& type);

// Whether a gradient's memory is seen through t alone (one handle on it, no other tensor over its
// storage) and contiguous: a gradient fresh from one node's backward, not one a node returned for two
// inputs or keeps. Such a gradient can become a leaf's own, or take a sum in place.
bool owns_its_memory(const Tensor& t);
// dst[i] += src[i] for tensors of one shape and float dtype, dst contiguous: the bits of add(dst, src).
// An in-place write, so dst's version is bumped (a rounded copy attached to it, core/gemm.hpp, goes stale).
void add_in_place(const Tensor& dst, const Tensor& src);

// The edge a gradient for `t` must flow into (null node when t needs no gradient).
Edge gradient_edge(const Tensor& t);
// True when grad mode is on and any of `inputs` requires grad.
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Attaches a backward closure to the results of an op: fn receives one gradient per output and
// returns one per input (undefined where an input needs none). Does nothing when no input requires
// grad or grad mode is off. Used by the library's own ops; users write a Function (function.hpp).
// `saved` lists the tensors fn keeps (undefined entries allowed): their versions are checked before
// fn runs (SavedVersions). In anomaly mode the results are checked for NaN/Inf here, whether or not
// a node is recorded.
using UnaryBackwardFn = std::function<std::vector<Tensor>(const Tensor& grad)>;
Tensor record(const char* name, Tensor out, const std::vector<Tensor>& inputs, const std::vector<Tensor>& saved,
              UnaryBackwardFn fn);
std::vector<Tensor> record_multi(const char* name, std::vector<Tensor> outs, const std::vector<Tensor>& inputs,
                                 const std::vector<Tensor>& saved, BackwardFn fn);
// For ops whose backward keeps no tensor (shapes, indices or scalars only).
inline Tensor record(const char* name, Tensor out, const std::vector<Tensor>& inputs, UnaryBackwardFn fn) {
  return record(name, std::move(out), inputs, std::vector<Tensor>{}, std::move(fn));
}
// The same with inputs and saved tensors as braced lists, as ops write them ({x, weight}): when no node
// is recorded (NoGradGuard, no input requiring grad) neither the lists nor the closure are copied to
// the heap, so an op under NoGradGuard pays for nothing of its backward beyond building fn's captures.
bool any_requires_grad(std::initializer_list<Tensor> inputs);
// Whether record() over these inputs records a node or checks the result (anomaly mode). When it will
// not, an op may return its result at once, without preparing what its backward would keep.
inline bool will_record(std::initializer_list<Tensor> inputs) {
  return is_anomaly_enabled() || any_requires_grad(inputs);
}
template <class Fn>
Tensor record(const char* name, Tensor out, std::initializer_list<Tensor> inputs, std::initializer_list<Tensor> saved,
              Fn&& fn) {
  if (!will_record(inputs)) return out;
  return record(name, std::move(out), std::vector<Tensor>(inputs), std::vector<Tensor>(saved),
                UnaryBackwardFn(std::forward<Fn>(fn)));
}
template <class Fn>
Tensor record(const char* name, Tensor out, std::initializer_list<Tensor> inputs, Fn&& fn) {
  return record(name, std::move(out), inputs, std::initializer_list<Tensor>{}, std::forward<Fn>(fn));
}
inline std::vector<Tensor> record_multi(const char* name, std::vector<Tensor> outs, const std::vector<Tensor>& inputs,
                                        BackwardFn fn) {
  return record_multi(name, std::move(outs), inputs, {}, std::move(fn));
}

// Marks outs as produced by `node` (which already has its edges). Used by Function; in anomaly mode
// it checks outs for NaN/Inf under the node's name and tags the node with the current module.
void set_history(std::vector<Tensor>& outs, const std::shared_ptr<Node>& node);

// Runs the backward pass from `roots` seeded with `grad_roots` (see engine.cpp).
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grad_roots, bool retain_graph);

}  // namespace latent::autograd

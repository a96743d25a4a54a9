// Anomaly mode: while on, every op's result and every backward node's gradients are checked for NaN
// and Inf, and the first one found throws latent::Error naming the op, the tensor and the module path.
//
//   latent::autograd::DetectAnomalyGuard anomaly;   // or set_detect_anomaly(true) for the whole run
//   model.loss(ids).total.backward();
//   // latent::Error: anomaly: backward of 'moe_experts' produced NaN in the gradient of the down_proj
//   //   weight of expert 5 [64, 32] (3 of 2048 values, first at [0, 5]); forward ran in module
//   //   model.layers.2.mlp.experts.5.down_proj
//
// What counts: NaN anywhere; Inf in a forward result only when no input of that op held NaN or Inf
// already, so intentional infinities (a -inf attention mask) may flow through ops; any Inf in a
// gradient. Views are not checked (they can only expose a value, not make one), so a parameter that
// holds NaN is reported at the first op that computes with it, with a note on which input held it.
// The module path is that of the innermost nn::Module whose forward (see nn::ForwardScope) was
// running on the calling thread when the op ran; a backward node remembers it from its forward.
// Fused ops that run many parts in one node (moe_experts) check each part themselves and name it.
// The checks only read: results with the mode on are bitwise those with it off.
//
// Off, the mode costs one relaxed load of a flag per op, per backward node and per module forward.
#pragma once
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace latent::autograd {

class Node;

namespace detail {
extern std::atomic<bool> anomaly_enabled;
}

// Process-wide, as torch.autograd.set_detect_anomaly: a training loop turns it on once.
void set_detect_anomaly(bool on);
inline bool is_anomaly_enabled() { return detail::anomaly_enabled.load(std::memory_order_relaxed); }

// Sets anomaly mode for its lifetime and restores the previous state (RAII, nests).
class DetectAnomalyGuard {
 public:
  explicit DetectAnomalyGuard(bool on = true);
  ~DetectAnomalyGuard();
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool previous_;
};

// ---- module paths (nn::ForwardScope builds on these; autograd knows nothing of modules) ----------

// Makes `label` the current module of this thread for its lifetime (a per-thread stack). Ops called
// on other threads (inside parallel_for workers) do not see it: capture it on the calling thread.
class ModuleLabelScope {
 public:
  explicit ModuleLabelScope(std::string label);
  ~ModuleLabelScope();
  ModuleLabelScope(const ModuleLabelScope&) = delete;
  ModuleLabelScope& operator=(const ModuleLabelScope&) = delete;
};
// The innermost module label of this thread, null outside every module. Shared, not copied: every
// node recorded inside one module forward points at the same string.
std::shared_ptr<const std::string> current_module_label();

// ---- the checks (called by record, set_history and the engine; public for ops written by hand) ----

// Throws if an output of op `name` holds NaN, or Inf while no input held NaN or Inf (see above).
// Outputs that share storage with an input are views and are skipped. Call only in anomaly mode.
void check_forward(const std::string& name, const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs);
// Throws if a gradient the engine is about to pass on from `node` holds NaN or Inf. `flowing[i]`
// says whether gradient i goes anywhere; `incoming` are the gradients the node received.
void check_backward(const Node& node, const std::vector<Tensor>& input_grads, const std::vector<bool>& flowing,
                    const std::vector<Tensor>& incoming);

// ---- the same checks inside fused ops that run several parts in one node (one per expert, say) ---
// Such an op checks each part itself, so the message names the part and the module it belongs to
// rather than the whole node. Names read in a sentence: "the down_proj weight of expert 5".
struct NamedTensor {
  std::string name;
  Tensor tensor;
};
// Throws if `out`, one part's result, holds NaN, or Inf while none of `inputs` held NaN or Inf;
// `module` (may be empty) is where the part ran. Call only in anomaly mode.
void check_forward_part(const std::string& op, const NamedTensor& out, const std::vector<NamedTensor>& inputs,
                        const std::string& module);
// Throws if `grad`, a gradient computed inside a fused op's backward, holds NaN or Inf; `incoming` is
// the gradient that part received, `module` (may be empty) where its forward ran.
void check_backward_part(const std::string& op, const NamedTensor& grad, const Tensor& incoming,
                         const std::string& module);

// True while the engine runs a node's backward on this thread: the ops a backward closure calls are
// not checked one by one, the engine checks what the node returns (and names the node).
bool in_backward();
class BackwardScope {
 public:
  BackwardScope();
  ~BackwardScope();
  BackwardScope(const BackwardScope&) = delete;
  BackwardScope& operator=(const BackwardScope&) = delete;

 private:
  bool previous_;
};

}  // namespace latent::autograd

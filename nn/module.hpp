// nn::Module: the base of every layer and model. Parameters, buffers and submodules are registered
// by name in the constructor, so checkpoint names ("model.layers.0.mlp.gate_proj.weight") fall out
// of the module tree.
//
// A layer derives from nn::Callable<Self> and writes `forward`; calling it, `(*layer)(x)`, runs that
// forward inside a ForwardScope. In anomaly mode (autograd/anomaly.hpp) the scope makes the module's
// path the one NaN/Inf errors name ("model.layers.2.mlp.experts.5.down_proj"), for the ops it runs
// and for their backward; otherwise it costs one flag test. User modules do the same:
//
//   struct MyBlock : latent::nn::Callable<MyBlock> {
//     std::shared_ptr<latent::nn::Linear> proj = register_module("proj", std::make_shared<latent::nn::Linear>(8, 8));
//     latent::Tensor forward(const latent::Tensor& x) const { return (*proj)(latent::relu(x)); }
//   };
//
// Calling `forward` directly skips only the label. Entry points other than forward (a model's
// `loss`, say) open `ForwardScope scope(*this);` themselves.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../autograd/anomaly.hpp"
#include "../core/tensor.hpp"

namespace latent::nn {

class Module {
 public:
  virtual ~Module();

  std::vector<std::pair<std::string, Tensor>> named_parameters() const;  // dotted names, registration order
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  std::map<std::string, Tensor> state_dict() const;  // parameters and buffers
  // Copies values into the registered tensors (their handles stay valid). strict: missing keys,
  // unexpected keys and shape mismatches throw one latent::Error listing all of them; non-strict
  // loads what matches and still refuses shape mismatches.
  void load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);
  // load_state_dict's checks alone, on names and shapes: the same error, and nothing is read or
  // changed. What loads a checkpoint too large to hold beside the model calls it with the
  // checkpoint's headers before streaming values into the tensors of state_dict() (models/model_files.hpp).
  void check_state_dict(const std::map<std::string, Shape>& shapes, bool strict = true) const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();
  // Converts every parameter and buffer to dtype in place: existing handles see the new dtype.
  void to(DType dtype);
  int64_t num_parameters() const;  // elements over all parameters
  // Dotted path from the root of the tree this module was first registered in, as named_parameters()
  // spells it ("model.layers.2.mlp"); "" for a root. Built on demand by walking up the parents.
  std::string module_path() const;

 protected:
  Tensor& register_parameter(const std::string& name, Tensor t);  // marks t as requiring grad
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <class M> std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void check_new_name(const std::string& name) const;
  template <class Visit> void visit(const std::string& prefix, Visit&& visit) const;

  // std::map-free, insertion-ordered; unique_ptr keeps the Tensor& handed out stable.
  std::vector<std::pair<std::string, std::unique_ptr<Tensor>>> parameters_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  // The module this one was first registered in (its name there is found in parent_->children_).
  // Parents own their children, so a parent outlives them unless the child is shared beyond the
  // tree; a dying parent unlinks its children.
  const Module* parent_ = nullptr;
};

// The current module of this thread in anomaly mode, for the duration of one forward (RAII, nests).
// The label is the module's path, or for a root its class name ("DeepSeekV3"). Off, it does nothing.
class ForwardScope {
 public:
  explicit ForwardScope(const Module& module) {
    if (autograd::is_anomaly_enabled()) [[unlikely]]
      enter(module);
  }
  ForwardScope(const ForwardScope&) = delete;
  ForwardScope& operator=(const ForwardScope&) = delete;

 private:
  void enter(const Module& module);
  std::optional<autograd::ModuleLabelScope> label_;
};

// A Module called as a function: operator() forwards its arguments to Derived::forward inside a
// ForwardScope (const and non-const, as Derived's forward is declared).
template <class Derived>
class Callable : public Module {
 public:
  template <class... Args> decltype(auto) operator()(Args&&... args) const {
    ForwardScope scope(*this);
    return static_cast<const Derived&>(*this).forward(std::forward<Args>(args)...);
  }
  template <class... Args> decltype(auto) operator()(Args&&... args) {
    ForwardScope scope(*this);
    return static_cast<Derived&>(*this).forward(std::forward<Args>(args)...);
  }
};

// An indexed list of submodules, registered as "0", "1", ... (HF's `layers.N.` names).
class ModuleList : public Module {
 public:
  template <class M> std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    items_.push_back(m);
    return register_module(std::to_string(items_.size() - 1), std::move(m));
  }
  size_t size() const { return items_.size(); }
  const std::shared_ptr<Module>& operator[](size_t i) const { return items_.at(i); }
  template <class M> std::shared_ptr<M> at(size_t i) const { return std::dynamic_pointer_cast<M>(items_.at(i)); }

 private:
  std::vector<std::shared_ptr<Module>> items_;
};

}  // namespace latent::nn

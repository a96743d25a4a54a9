// nn::Module: the base of every layer and model. Parameters, buffers and submodules are registered
// by name in the constructor, so checkpoint names ("model.layers.0.mlp.gate_proj.weight") fall out
// of the module tree.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

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

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();
  // Converts every parameter and buffer to dtype in place: existing handles see the new dtype.
  void to(DType dtype);
  int64_t num_parameters() const;  // elements over all parameters

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

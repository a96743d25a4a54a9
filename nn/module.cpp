// Module bookkeeping: registration, traversal in registration order, state dicts.
#include "module.hpp"

#include <algorithm>
#include <set>
#include <typeinfo>

#include "../autograd/node.hpp"
#include "../core/strided.hpp"

namespace latent::nn {

Module::~Module() {
  for (auto& [_, child] : children_)
    if (child->parent_ == this) child->parent_ = nullptr;
}

void Module::check_new_name(const std::string& name) const {
  if (name.empty() || name.find('.') != std::string::npos)
    fail("Module: invalid name '{}' (must be non-empty, without '.')", name);
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list)
      if (n == name) return true;
    return false;
  };
  if (taken(parameters_) || taken(buffers_) || taken(children_))
    fail("Module: name '{}' is already registered", name);
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  check_new_name(name);
  if (!t.defined()) fail("Module: parameter '{}' is undefined", name);
  if (!t.is_leaf()) t = t.detach();
  t.requires_grad_(true);
  parameters_.emplace_back(name, std::make_unique<Tensor>(std::move(t)));
  return *parameters_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name);
  if (!t.defined()) fail("Module: buffer '{}' is undefined", name);
  buffers_.emplace_back(name, std::make_unique<Tensor>(t.detach()));
  return *buffers_.back().second;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name);
  if (!m) fail("Module: submodule '{}' is null", name);
  for (const Module* ancestor = this; ancestor; ancestor = ancestor->parent_)
    if (ancestor == m.get()) fail("Module: submodule '{}' is this module or one of its parents (a cycle)", name);
  if (!m->parent_) m->parent_ = this;  // a module shared by two parents keeps its first path
  children_.emplace_back(name, std::move(m));
}

std::string Module::module_path() const {
  std::vector<const std::string*> names;
  for (const Module* m = this; m->parent_; m = m->parent_)
    for (const auto& [name, child] : m->parent_->children_)
      if (child.get() == m) {
        names.push_back(&name);
        break;
      }
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it) path += (path.empty() ? "" : ".") + **it;
  return path;
}

void ForwardScope::enter(const Module& module) {
  std::string label = module.module_path();
  if (label.empty()) {  // a root: its class name, without namespaces
    label = autograd::type_name(typeid(module));
    if (const size_t colon = label.rfind("::"); colon != std::string::npos) label.erase(0, colon + 2);
  }
  label_.emplace(std::move(label));
}

template <class Visit> void Module::visit(const std::string& prefix, Visit&& fn) const {
  fn(prefix, *this);
  for (const auto& [name, child] : children_) child->visit(prefix + name + ".", fn);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<const TensorImpl*> seen;  // a tensor shared by two modules (tied weights) is listed once
  visit("", [&](const std::string& prefix, const Module& m) {
    for (const auto& [name, t] : m.parameters_) {
      if (std::find(seen.begin(), seen.end(), t->impl_ptr().get()) != seen.end()) continue;
      seen.push_back(t->impl_ptr().get());
      out.emplace_back(prefix + name, *t);
    }
  });
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [_, t] : named_parameters()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  visit("", [&](const std::string& prefix, const Module& m) {
    for (const auto& [name, t] : m.buffers_) out.emplace_back(prefix + name, *t);
  });
  return out;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : named_parameters()) out.emplace(name, t.detach());
  for (auto& [name, t] : named_buffers()) out.emplace(name, t.detach());
  return out;
}

void Module::check_state_dict(const std::map<std::string, Shape>& shapes, bool strict) const {
  auto own = named_parameters();
  for (auto& b : named_buffers()) own.push_back(b);
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> known;
  for (const auto& [name, t] : own) {
    known.insert(name);
    auto it = shapes.find(name);
    if (it == shapes.end()) { missing.push_back(name); continue; }
    if (it->second != t.shape())
      mismatched.push_back(name + " (checkpoint " + shape_str(it->second) + ", model " + shape_str(t.shape()) + ")");
  }
  for (const auto& [name, _] : shapes)
    if (!known.count(name)) unexpected.push_back(name);
  if (mismatched.empty() && (!strict || (missing.empty() && unexpected.empty()))) return;
  std::string message = "load_state_dict:";
  auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    message += std::string(" ") + what + ":";
    for (size_t i = 0; i < names.size(); ++i) message += (i ? ", " : " ") + names[i];
    message += ";";
  };
  list("missing keys", strict ? missing : std::vector<std::string>{});
  list("unexpected keys", strict ? unexpected : std::vector<std::string>{});
  list("shape mismatches", mismatched);
  fail("{}", message);
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  std::map<std::string, Shape> shapes;
  for (const auto& [name, t] : state) shapes.emplace(name, t.shape());
  check_state_dict(shapes, strict);
  for (const auto& [name, t] : state_dict()) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    copy_into(t, it->second);  // converts dtype to the model's; t shares the registered tensor's storage
    t.bump_version();
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [_, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.set_grad(Tensor());
}

void Module::to(DType dtype) {
  auto convert = [dtype](Tensor& t) {
    if (t.dtype() == dtype || !is_floating(t.dtype())) return;
    const Tensor converted = cast_copy(t, dtype);
    TensorImpl& impl = t.impl();  // swap the data under every handle sharing this impl
    impl.storage = converted.storage();
    impl.strides = converted.strides();
    impl.offset = 0;
    impl.dtype = dtype;
    impl.grad = nullptr;
  };
  visit("", [&](const std::string&, const Module& m) {
    for (auto& [_, t] : m.parameters_) convert(*t);
    for (auto& [_, t] : m.buffers_) convert(*t);
  });
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& t : parameters()) n += t.numel();
  return n;
}

}  // namespace latent::nn

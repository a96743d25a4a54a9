// nn::Sequential: submodules applied in order, each Tensor -> Tensor, as torch.nn.Sequential.
// Modules are registered as "0", "1", ... (so a checkpoint reads "0.weight"); a plain function
// (an activation) takes a place in the order without parameters or a name.
//
//   nn::Sequential net(std::make_shared<nn::Linear>(4, 16), relu, std::make_shared<nn::Linear>(16, 1));
//   Tensor y = net(x);
#pragma once
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "module.hpp"

namespace latent::nn {

class Sequential : public Callable<Sequential> {
 public:
  using Step = std::function<Tensor(const Tensor&)>;

  Sequential() = default;
  template <class... Steps> explicit Sequential(Steps&&... steps) { (push_back(std::forward<Steps>(steps)), ...); }

  // A module joins the tree under the next index; it is called through its operator(), so its
  // forward runs inside its own ForwardScope.
  template <class M> std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    static_assert(std::is_base_of_v<Module, M>, "Sequential::push_back: not an nn::Module");
    static_assert(std::is_invocable_r_v<Tensor, M&, const Tensor&>, "Sequential::push_back: the module must map a Tensor to a Tensor");
    const size_t index = modules_.size();
    // The tree owns the module (children_), so the step may hold a plain pointer to it.
    steps_.push_back([raw = m.get()](const Tensor& x) -> Tensor { return (*raw)(x); });
    modules_.push_back(m);
    return register_module(std::to_string(index), std::move(m));
  }
  template <class F, class = std::enable_if_t<std::is_invocable_r_v<Tensor, F&, const Tensor&>>>
  void push_back(F&& function) {
    steps_.emplace_back(std::forward<F>(function));
  }
  void push_back(Tensor (*function)(const Tensor&)) { steps_.emplace_back(function); }

  Tensor forward(const Tensor& x) const;
  size_t size() const { return steps_.size(); }  // modules and functions
  // The i-th module (functions not counted), as registered under the name std::to_string(i).
  template <class M> std::shared_ptr<M> module(size_t i) const { return std::dynamic_pointer_cast<M>(modules_.at(i)); }

 private:
  std::vector<Step> steps_;
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace latent::nn

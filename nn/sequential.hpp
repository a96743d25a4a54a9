// nn::Sequential: submodules applied in order, each Tensor -> Tensor, as torch.nn.Sequential.
// Each step is named by its position, as PyTorch does: a module at position 2 is registered as "2"
// (its checkpoint names read "2.weight"); a plain function (an activation) holds its position
// without parameters, so Sequential(Linear, relu, Linear) stores "0.*" and "2.*" like
// torch.nn.Sequential(Linear, ReLU, Linear).
//
//   nn::Sequential net(std::make_shared<nn::Linear>(4, 16), relu, std::make_shared<nn::Linear>(16, 1));
//   Tensor y = net(x);
#pragma once
#include <functional>
#include <memory>
#include <string>
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

  // A module is called through its operator(), so its forward runs inside its own ForwardScope.
  template <class M> std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    static_assert(std::is_base_of_v<Module, M>, "Sequential::push_back: not an nn::Module");
    static_assert(std::is_invocable_r_v<Tensor, M&, const Tensor&>, "Sequential::push_back: the module must map a Tensor to a Tensor");
    const std::string name = std::to_string(steps_.size());
    // The tree owns the module (children_), so the step may hold a plain pointer to it.
    steps_.push_back([raw = m.get()](const Tensor& x) -> Tensor { return (*raw)(x); });
    modules_.push_back(m);
    return register_module(name, std::move(m));
  }
  template <class F, class = std::enable_if_t<std::is_invocable_r_v<Tensor, F&, const Tensor&>>>
  void push_back(F&& function) {
    steps_.emplace_back(std::forward<F>(function));
    modules_.push_back(nullptr);
  }
  void push_back(Tensor (*function)(const Tensor&)) { push_back(Step(function)); }

  Tensor forward(const Tensor& x) const;
  size_t size() const { return steps_.size(); }  // modules and functions
  // The module at position i: null where that step is a function or not an M.
  template <class M> std::shared_ptr<M> module(size_t i) const { return std::dynamic_pointer_cast<M>(modules_.at(i)); }

 private:
  std::vector<Step> steps_;
  std::vector<std::shared_ptr<Module>> modules_;  // per step; null for a function
};

}  // namespace latent::nn

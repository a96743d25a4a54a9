// Numerical gradient checking: the test every differentiable op and layer in latent passes.
#pragma once
#include <concepts>
#include <functional>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "../core/tensor.hpp"

namespace latent::autograd {

struct GradcheckOptions {
  double eps = 1e-6, atol = 1e-5, rtol = 1e-3;
  std::string name = "function";  // what failure messages call fn (gradcheck_module: the module)
  int64_t max_per_input = 0;      // > 0: check only this many evenly spaced elements of each tensor
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Compares analytic gradients of sum(fn(inputs) * random weights) with central differences, in f64.
// Inputs with requires_grad are checked — including tensors fn reaches without reading its argument,
// such as a module's own parameters passed as `inputs` (perturbed in place, as PyTorch does, then
// restored; their .grad is left as it was). A float64 leaf is perturbed in place; any other input is
// replaced by a float64 copy, which fn must read through its argument (a float32 tensor fn reaches
// directly is refused: call to(kFloat64) on its module). It never returns true having checked
// nothing. Returns true on agreement; on disagreement throws latent::Error naming the function, the
// first bad element with both values, the tolerance and how many elements are off.
bool gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

// gradcheck with respect to `parameters` (perturbed in place; they must be float64 and are named in
// messages) as well as the inputs that require grad. gradcheck_module is the usual way to call it.
bool gradcheck_parameters(const std::vector<std::pair<std::string, Tensor>>& parameters, const GradcheckFn& fn,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

// "Linear" for a root module, "MLP 'layers.0.mlp'" for one inside a tree.
std::string module_label(const std::type_info& type, const std::string& path);

// Anything with named parameters and a path: nn::Module (autograd sits below nn, so it is not named).
template <class M>
concept ParameterOwner = requires(const M& m) {
  { m.named_parameters() } -> std::convertible_to<std::vector<std::pair<std::string, Tensor>>>;
  { m.module_path() } -> std::convertible_to<std::string>;
};

// Checks forward(inputs) with respect to every parameter of `module` that requires grad and every
// input that does. The module must be float64 (module.to(kFloat64)). Messages name the module.
template <ParameterOwner M>
bool gradcheck_module(const M& module, const GradcheckFn& forward, const std::vector<Tensor>& inputs,
                      GradcheckOptions options = {}) {
  if (options.name == GradcheckOptions().name) options.name = module_label(typeid(module), module.module_path());
  return gradcheck_parameters(module.named_parameters(), forward, inputs, options);
}

}  // namespace latent::autograd

// gradcheck: analytic gradient of a random projection of the output vs central differences.
#include "gradcheck.hpp"

#include <cmath>
#include <fmt/format.h>

#include "../core/random.hpp"
#include "../core/strided.hpp"
#include "grad_mode.hpp"
#include "ops.hpp"

namespace latent::autograd {
namespace {

double projected(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
                 const Tensor& weights) {
  NoGradGuard no_grad;
  return sum(mul(fn(inputs), weights)).item();
}

}  // namespace

bool gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
               const GradcheckOptions& options) {
  // Fresh f64 leaves, so the check neither depends on nor disturbs the caller's tensors.
  std::vector<Tensor> leaves;
  bool any = false;
  for (const Tensor& t : inputs) {
    if (!t.defined() || !t.requires_grad()) { leaves.push_back(t); continue; }
    Tensor leaf = cast_copy(t.detach(), kFloat64);
    leaf.requires_grad_(true);
    leaves.push_back(leaf);
    any = true;
  }
  if (!any) throw Error("gradcheck: no input requires grad");

  Tensor output = fn(leaves);
  if (output.dtype() != kFloat64)
    throw Error(std::string("gradcheck: fn must compute in float64, its output is ") + dtype_name(output.dtype()));
  Generator gen(0x6eadc4ec);
  const Tensor weights = randn(output.shape(), kFloat64, &gen);
  sum(mul(output, weights)).backward();

  for (size_t i = 0; i < leaves.size(); ++i) {
    Tensor leaf = leaves[i];
    if (!leaf.defined() || !leaf.requires_grad()) continue;
    const Tensor grad = leaf.grad();
    const std::vector<double> analytic =
        grad.defined() ? grad.to_vector<double>() : std::vector<double>(static_cast<size_t>(leaf.numel()), 0.0);
    double* data = leaf.data<double>();
    int64_t flat = 0;
    for_each_offset(leaf, [&](int64_t off) {
      const double original = data[off];
      data[off] = original + options.eps;
      const double plus = projected(fn, leaves, weights);
      data[off] = original - options.eps;
      const double minus = projected(fn, leaves, weights);
      data[off] = original;
      const double numerical = (plus - minus) / (2 * options.eps);
      const double a = analytic[static_cast<size_t>(flat)];
      if (!(std::abs(a - numerical) <= options.atol + options.rtol * std::abs(numerical)))
        throw Error(fmt::format("gradcheck: input {} element {} {}: analytic {:.10g} vs numerical {:.10g}", i, flat,
                                index_str(flat, leaf.shape()), a, numerical));
      ++flat;
    });
  }
  return true;
}

}  // namespace latent::autograd

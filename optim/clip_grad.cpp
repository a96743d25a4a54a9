// Global gradient norm and in-place rescaling of gradients.
#include "clip_grad.hpp"

#include <fmt/format.h>

#include <cmath>
#include <string>

#include "../core/parallel.hpp"
#include "../core/strided.hpp"

namespace latent::optim {
namespace {

constexpr int64_t kNormGrain = 1 << 15;

// sum(x^2) over a tensor in double: fixed chunks, partial sums added in chunk order.
double sum_of_squares(const Tensor& t) {
  const Tensor flat = contiguous_copy(t);
  const int64_t n = flat.numel();
  std::vector<double> partial(static_cast<size_t>((n + kNormGrain - 1) / kNormGrain), 0.0);
  dispatch_floating(flat.dtype(), "clip_grad_norm", [&]<class T>() {
    const T* x = flat.data<T>();
    parallel_for(n, kNormGrain, [&](int64_t begin, int64_t end) {
      double sum = 0;
      for (int64_t i = begin; i < end; ++i) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
      partial[static_cast<size_t>(begin / kNormGrain)] = sum;
    });
  });
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

void scale_in_place(const Tensor& t, double factor) {
  dispatch_floating(t.dtype(), "clip_grad_norm", [&]<class T>() {
    const T f = static_cast<T>(factor);
    T* x = t.data<T>();
    if (t.is_contiguous()) {
      parallel_for(t.numel(), kNormGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) x[i] *= f;
      });
    } else {
      for_each_offset(t, [&](int64_t offset) { x[offset] *= f; });
    }
  });
}

}  // namespace

double grad_norm(const std::vector<Tensor>& params) {
  double total = 0;
  for (const Tensor& p : params) {
    if (!p.defined()) throw Error("grad_norm: undefined parameter in the list");
    const Tensor grad = p.grad();
    if (grad.defined()) total += sum_of_squares(grad);
  }
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  if (!(max_norm >= 0)) throw Error("clip_grad_norm: max_norm must be >= 0, got " + fmt::format("{}", max_norm));
  const double norm = grad_norm(params);
  if (!std::isfinite(norm)) return norm;
  const double factor = max_norm / (norm + 1e-6);
  if (factor < 1)
    for (const Tensor& p : params)
      if (const Tensor grad = p.grad(); grad.defined()) scale_in_place(grad, factor);
  return norm;
}

}  // namespace latent::optim

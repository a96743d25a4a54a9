// Global gradient norm and in-place rescaling of gradients.
#include "clip_grad.hpp"

#include <cmath>
#include <string>

#include "../core/parallel.hpp"
#include "../core/strided.hpp"

namespace latent::optim {
namespace {

constexpr int64_t kNormGrain = 1 << 15;
constexpr int kLanes = 8;  // partial sums per chunk: a vectorisable reduction in a fixed order

// Contiguous tensors cut into chunks of kNormGrain elements, all run as one parallel loop: a model
// has hundreds of small gradients, and a parallel loop per tensor would be mostly task overhead.
// The cut depends on the shapes only.
class Chunks {
 public:
  explicit Chunks(std::vector<Tensor> tensors) : tensors_(std::move(tensors)) {
    for (size_t t = 0; t < tensors_.size(); ++t)
      for (int64_t first = 0; first < tensors_[t].numel(); first += kNormGrain) spans_.emplace_back(t, first);
  }
  int64_t size() const { return static_cast<int64_t>(spans_.size()); }
  // fn(chunk index, x, n) with x the chunk's first element (T the tensor's type), in parallel.
  template <class Fn> void for_each(Fn&& fn) const {
    parallel_for(size(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const auto t = spans_[static_cast<size_t>(c)].first;
        const int64_t first = spans_[static_cast<size_t>(c)].second;
        const Tensor& tensor = tensors_[t];
        const int64_t n = std::min(kNormGrain, tensor.numel() - first);
        dispatch_floating(tensor.dtype(), "clip_grad_norm", [&]<class T>() { fn(c, tensor.data<T>() + first, n); });
      }
    });
  }

 private:
  std::vector<Tensor> tensors_;
  std::vector<std::pair<size_t, int64_t>> spans_;  // (tensor, first element)
};

template <class T> double sum_of_squares(const T* x, int64_t n) {
  double lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += static_cast<double>(x[i + l]) * static_cast<double>(x[i + l]);
  double total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; i < n; ++i) total += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return total;
}

std::vector<Tensor> defined_grads(const std::vector<Tensor>& params) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    if (!p.defined()) fail("grad_norm: undefined parameter in the list");
    if (const Tensor grad = p.grad(); grad.defined()) grads.push_back(grad);
  }
  return grads;
}

}  // namespace

double grad_norm(const std::vector<Tensor>& params) {
  std::vector<Tensor> grads = defined_grads(params);
  for (Tensor& g : grads) g = contiguous_copy(g);
  const Chunks chunks(std::move(grads));
  // One partial per chunk, added in chunk order: the same sum for any thread count.
  std::vector<double> partial(static_cast<size_t>(chunks.size()), 0.0);
  chunks.for_each([&](int64_t c, const auto* x, int64_t n) { partial[static_cast<size_t>(c)] = sum_of_squares(x, n); });
  double total = 0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  if (!(max_norm >= 0)) fail("clip_grad_norm: max_norm must be >= 0, got {}", max_norm);
  const double norm = grad_norm(params);
  if (!std::isfinite(norm)) return norm;
  const double factor = max_norm / (norm + 1e-6);
  if (factor >= 1) return norm;
  std::vector<Tensor> contiguous, strided;
  for (const Tensor& g : defined_grads(params)) (g.is_contiguous() ? contiguous : strided).push_back(g);
  Chunks(std::move(contiguous)).for_each([&](int64_t, auto* x, int64_t n) {
    const auto f = static_cast<std::remove_reference_t<decltype(*x)>>(factor);
    for (int64_t i = 0; i < n; ++i) x[i] *= f;
  });
  for (const Tensor& g : strided)  // read and scaled in place through their strides
    dispatch_floating(g.dtype(), "clip_grad_norm", [&]<class T>() {
      T* x = g.data<T>();
      const T f = static_cast<T>(factor);
      for_each_offset(g, [&](int64_t offset) { x[offset] *= f; });
    });
  return norm;
}

}  // namespace latent::optim

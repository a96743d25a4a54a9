// topk and sort: indices from a stable per-row sort; values are a gather, so they carry gradients.
#include "sort_ops.hpp"

#include <algorithm>
#include <numeric>

#include "../core/strided.hpp"
#include "index_ops.hpp"
#include "shape_ops.hpp"

namespace latent {
namespace {

// Int64 indices of each row along dim, ordered by `before` (stable), first k kept.
Tensor order_along(const Tensor& x, int64_t dim, int64_t k, bool descending) {
  const Tensor moved = contiguous_copy(transpose(x.detach(), dim, -1));
  const int64_t n = moved.size(-1), rows = n == 0 ? 0 : moved.numel() / n;
  Shape shape = moved.shape();
  shape.back() = k;
  Tensor out = Tensor::empty(shape, kInt64);
  dispatch(x.dtype(), [&]<class T>() {
    const T* p = moved.data<T>();
    int64_t* q = out.data<int64_t>();
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = p + r * n;
      std::iota(idx.begin(), idx.end(), 0);
      auto cmp = [&](int64_t a, int64_t b) { return descending ? row[a] > row[b] : row[a] < row[b]; };
      if (k < n) std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
        return cmp(a, b) || (!cmp(b, a) && a < b);  // ties: lower index first
      });
      else std::stable_sort(idx.begin(), idx.end(), cmp);
      std::copy_n(idx.begin(), k, q + r * k);
    }
  });
  return contiguous_copy(transpose(out, dim, -1));
}

}  // namespace

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  dim = normalize_dim(dim, x.dim(), "topk");
  const int64_t n = x.dim() == 0 ? 1 : x.size(dim);
  if (k < 0 || k > n)
    throw Error("topk: k = " + std::to_string(k) + " out of range for dim " + std::to_string(dim) + " of size " + std::to_string(n));
  const Tensor indices = order_along(x, dim, k, largest);
  return {gather(x, dim, indices), indices};
}

std::pair<Tensor, Tensor> sort(const Tensor& x, int64_t dim, bool descending) {
  dim = normalize_dim(dim, x.dim(), "sort");
  const Tensor indices = order_along(x, dim, x.dim() == 0 ? 1 : x.size(dim), descending);
  return {gather(x, dim, indices), indices};
}

Tensor argsort(const Tensor& x, int64_t dim, bool descending) { return sort(x.detach(), dim, descending).second; }

}  // namespace latent

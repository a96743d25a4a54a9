// topk, sort and argsort: each row along dim is ordered by (value, index), rows in parallel; values are
// picked in the same pass and their gradient is scattered back to the picked positions.
#include "sort_ops.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>

#include "../core/factory.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "index_ops.hpp"
#include "node.hpp"

namespace latent {
namespace {

// Elements per parallel chunk of rows (rounded to whole rows); depends on the shape only.
constexpr int64_t kSortGrainElements = 1 << 14;

// a goes before b. NaN counts as larger than every number (as in PyTorch), which keeps the
// comparison a strict weak order, so std::sort stays well defined on any data.
template <class T> bool goes_before(T a, T b, bool descending) {
  if constexpr (std::is_floating_point_v<T>) {
    const bool a_nan = std::isnan(a), b_nan = std::isnan(b);
    if (a_nan || b_nan) return descending ? a_nan && !b_nan : !a_nan && b_nan;
  }
  return descending ? a > b : a < b;
}

// The first k of each row along dim in (value, lower index first) order: Int64 indices into the
// row, and the values at them. Row r of a contiguous tensor starts at (r / inner) * n * inner + r % inner
// and its elements are `inner` apart; outputs use the same layout with k in place of n.
std::pair<Tensor, Tensor> order_along(const Tensor& x, int64_t dim, int64_t k, bool descending) {
  const Tensor xc = contiguous_copy(x.detach());
  const int64_t n = x.dim() == 0 ? 1 : x.size(dim);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d < dim) outer *= x.size(d);
    else if (d > dim) inner *= x.size(d);
  Shape shape = x.shape();
  if (x.dim() > 0) shape[static_cast<size_t>(dim)] = k;
  Tensor values = Tensor::empty(shape, x.dtype()), indices = Tensor::empty(shape, kInt64);
  const int64_t rows = outer * inner, grain = std::max<int64_t>(1, kSortGrainElements / std::max<int64_t>(n, 1));
  // One scratch row of candidate indices per chunk, from the caching allocator.
  Tensor scratch = Tensor::empty({(rows + grain - 1) / grain, n}, kInt64);
  dispatch(x.dtype(), [&]<class T>() {
    const T* px = xc.data<T>();
    T* pv = values.data<T>();
    int64_t* pi = indices.data<int64_t>();
    parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
      int64_t* order = scratch.data<int64_t>() + (begin / grain) * n;
      for (int64_t r = begin; r < end; ++r) {
        const int64_t in_at = (r / inner) * n * inner + r % inner, out_at = (r / inner) * k * inner + r % inner;
        const T* row = px + in_at;
        auto before = [&](int64_t a, int64_t b) {
          const T va = row[a * inner], vb = row[b * inner];
          if (goes_before(va, vb, descending)) return true;
          if (goes_before(vb, va, descending)) return false;
          return a < b;  // ties: lower index first, which is also what a stable sort gives
        };
        std::iota(order, order + n, int64_t{0});
        if (k < n) std::nth_element(order, order + k, order + n, before);  // the first k, unordered
        std::sort(order, order + k, before);
        for (int64_t j = 0; j < k; ++j) {
          pi[out_at + j * inner] = order[j];
          pv[out_at + j * inner] = row[order[j] * inner];
        }
      }
    });
  });
  return {values, indices};
}

// Values of an ordering, differentiable: the gradient goes back to the positions they came from.
Tensor picked_values(const char* op, const Tensor& x, int64_t dim, const Tensor& values, const Tensor& indices) {
  return autograd::record(op, values, {x}, {indices}, [shape = x.shape(), dim, indices](const Tensor& grad) -> std::vector<Tensor> {
    return {scatter_add(zeros(shape, grad.dtype()), dim, indices, grad)};
  });
}

}  // namespace

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  dim = normalize_dim(dim, x.dim(), "topk");
  const int64_t n = x.dim() == 0 ? 1 : x.size(dim);
  const int64_t lowest = x.dim() == 0 ? 1 : 0;  // a 0-dim result holds exactly one value
  if (k < lowest || k > n)
    fail("topk: k = {} out of range [{}, {}] for dim {} of {}", k, lowest, n, dim, shape_str(x.shape()));
  auto [values, indices] = order_along(x, dim, k, largest);
  return {picked_values("topk", x, dim, values, indices), indices};
}

std::pair<Tensor, Tensor> sort(const Tensor& x, int64_t dim, bool descending) {
  dim = normalize_dim(dim, x.dim(), "sort");
  auto [values, indices] = order_along(x, dim, x.dim() == 0 ? 1 : x.size(dim), descending);
  return {picked_values("sort", x, dim, values, indices), indices};
}

Tensor argsort(const Tensor& x, int64_t dim, bool descending) {
  dim = normalize_dim(dim, x.dim(), "argsort");
  return order_along(x, dim, x.dim() == 0 ? 1 : x.size(dim), descending).second;
}

}  // namespace latent

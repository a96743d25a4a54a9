// Reductions. The reduced dims are moved last and each row is reduced sequentially (fixed order,
// so sums are bitwise reproducible); rows run in parallel. Sums of float32 accumulate in double.
#include "reduce.hpp"

#include <algorithm>
#include <limits>

#include "../core/elementwise.hpp"
#include "../core/factory.hpp"
#include "elementwise.hpp"
#include "index_ops.hpp"
#include "node.hpp"
#include "shape_ops.hpp"

namespace latent {
namespace {

using autograd::record;

struct Reduction {
  Tensor rows;         // contiguous [outer, inner]: each row is reduced to one value
  Shape kept_shape;    // result shape with keepdim
  Shape result_shape;  // result shape as requested
  int64_t outer = 0, inner = 0;
};

Reduction plan(const Tensor& x, std::vector<int64_t> dims, bool keepdim, const char* op) {
  const int64_t nd = x.dim();
  if (dims.empty())
    for (int64_t d = 0; d < nd; ++d) dims.push_back(d);
  std::vector<bool> reduced(static_cast<size_t>(nd), false);
  for (int64_t& d : dims) {
    d = normalize_dim(d, nd, op);
    if (nd > 0 && reduced[static_cast<size_t>(d)]) fail("{}: dim {} repeated", op, d);
    if (nd > 0) reduced[static_cast<size_t>(d)] = true;
  }
  Reduction r;
  std::vector<int64_t> order;
  r.outer = 1;
  r.inner = 1;
  for (int64_t d = 0; d < nd; ++d) {
    if (reduced[static_cast<size_t>(d)]) {
      r.kept_shape.push_back(1);
      if (keepdim) r.result_shape.push_back(1);
      r.inner *= x.shape()[static_cast<size_t>(d)];
    } else {
      order.push_back(d);
      r.kept_shape.push_back(x.shape()[static_cast<size_t>(d)]);
      r.result_shape.push_back(x.shape()[static_cast<size_t>(d)]);
      r.outer *= x.shape()[static_cast<size_t>(d)];
    }
  }
  for (int64_t d = 0; d < nd; ++d)
    if (reduced[static_cast<size_t>(d)]) order.push_back(d);
  r.rows = contiguous_copy(x.detach().permute(order));
  return r;
}

constexpr int64_t kSumBlock = 1 << 14;  // rows longer than this are summed in blocks, in parallel

template <class T> using Accumulator = std::conditional_t<std::is_same_v<T, float>, double, T>;

Tensor sum_kernel(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return dispatch(x.dtype(), [&]<class T>() {
    // Reducing leading dims of a contiguous tensor (bias gradients): add whole rows, no transpose.
    const int64_t nd = x.dim();
    bool leading = !dims.empty() && x.is_contiguous();
    std::vector<int64_t> sorted = dims;
    for (int64_t& d : sorted) d = normalize_dim(d, nd, "sum");
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; leading && i < sorted.size(); ++i) leading = sorted[i] == static_cast<int64_t>(i);
    if (leading && static_cast<int64_t>(sorted.size()) < nd) {
      int64_t rows = 1;
      for (int64_t d : sorted) rows *= x.shape()[static_cast<size_t>(d)];
      const int64_t width = x.numel() / std::max<int64_t>(rows, 1);
      Shape kept(x.shape()), result;
      for (int64_t d : sorted) kept[static_cast<size_t>(d)] = 1;
      for (int64_t d = 0; d < nd; ++d)
        if (keepdim || !std::binary_search(sorted.begin(), sorted.end(), d)) result.push_back(kept[static_cast<size_t>(d)]);
      Tensor out = Tensor::empty(result, x.dtype());
      const T* p = x.data<T>();
      T* q = out.data<T>();
      parallel_for(width, 1024, [&](int64_t b, int64_t e) {
        std::vector<Accumulator<T>> acc(static_cast<size_t>(e - b), 0);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = b; c < e; ++c) acc[static_cast<size_t>(c - b)] += p[r * width + c];
        for (int64_t c = b; c < e; ++c) q[c] = static_cast<T>(acc[static_cast<size_t>(c - b)]);
      });
      return out;
    }
    const Reduction r = plan(x, dims, keepdim, "sum");
    Tensor out = Tensor::empty(r.result_shape, x.dtype());
    const T* p = r.rows.data<T>();
    T* q = out.data<T>();
    if (r.inner <= kSumBlock) {
      const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(r.inner, 1));
      parallel_for(r.outer, grain, [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          Accumulator<T> acc = 0;
          for (int64_t i = 0; i < r.inner; ++i) acc += p[o * r.inner + i];
          q[o] = static_cast<T>(acc);
        }
      });
      return out;
    }
    // Long rows (a full sum, a loss): partial sums of fixed blocks in parallel, then each row's
    // partials added in block order. The blocks depend on the row length only, not on the threads.
    const int64_t blocks = (r.inner + kSumBlock - 1) / kSumBlock;
    std::vector<Accumulator<T>> partial(static_cast<size_t>(r.outer * blocks));
    parallel_for(r.outer * blocks, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t o = t / blocks, first = (t % blocks) * kSumBlock, last = std::min(r.inner, first + kSumBlock);
        Accumulator<T> acc = 0;
        for (int64_t i = first; i < last; ++i) acc += p[o * r.inner + i];
        partial[static_cast<size_t>(t)] = acc;
      }
    });
    for (int64_t o = 0; o < r.outer; ++o) {
      Accumulator<T> acc = 0;
      for (int64_t k = 0; k < blocks; ++k) acc += partial[static_cast<size_t>(o * blocks + k)];
      q[o] = static_cast<T>(acc);
    }
    return out;
  });
}

Shape kept_shape(const Tensor& x, std::vector<int64_t> dims) {
  Shape kept = x.shape();
  if (dims.empty()) std::fill(kept.begin(), kept.end(), 1);
  for (int64_t d : dims) {
    const int64_t nd = normalize_dim(d, x.dim(), "reduce");
    if (x.dim() > 0) kept[static_cast<size_t>(nd)] = 1;  // a 0-dim tensor "reduces" over dim 0 or -1
  }
  return kept;
}

int64_t reduced_count(const Tensor& x, const std::vector<int64_t>& dims) {
  return x.numel() / std::max<int64_t>(1, shape_numel(kept_shape(x, dims)));
}

}  // namespace

Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  Tensor out = sum_kernel(x, dims, keepdim);
  return record("sum", out, {x}, [shape = x.shape(), kept = kept_shape(x, dims)](const Tensor& g) -> std::vector<Tensor> {
    return {expand(reshape(g, kept), shape)};
  });
}

Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  check_floating(x.dtype(), "mean");
  const int64_t count = reduced_count(x, dims);
  if (count == 0) fail("mean: reducing {} over zero elements", shape_str(x.shape()));
  return mul(sum(x, dims, keepdim), 1.0 / static_cast<double>(count));
}

Tensor amax(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  if (x.numel() == 0) fail("amax: empty tensor {}", shape_str(x.shape()));
  const Reduction r = plan(x, dims, keepdim, "amax");
  Tensor out = dispatch(x.dtype(), [&]<class T>() {
    Tensor o = Tensor::empty(r.result_shape, x.dtype());
    const T* p = r.rows.data<T>();
    T* q = o.data<T>();
    parallel_for(r.outer, std::max<int64_t>(1, kElementwiseGrain / r.inner), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) q[i] = *std::max_element(p + i * r.inner, p + (i + 1) * r.inner);
    });
    return o;
  });
  return record("amax", out, {x}, {x, out}, [x = x.detach(), out = out.detach(), kept = r.kept_shape, dims](const Tensor& g) -> std::vector<Tensor> {
    // The gradient is shared evenly between the elements equal to the maximum.
    const Tensor is_max = to(eq(x, reshape(out, kept)), x.dtype());
    const Tensor ties = sum(is_max, dims, true);
    return {mul(is_max, div(reshape(g, kept), ties))};
  });
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  dim = normalize_dim(dim, x.dim(), "max");
  if (x.dim() == 0) return max(reshape(x, {1}), 0, false);  // a 0-dim tensor is its own maximum, index 0
  if (x.dim() > 0 && x.shape()[static_cast<size_t>(dim)] == 0) fail("max: empty dim in {}", shape_str(x.shape()));
  const Reduction r = plan(x, {dim}, keepdim, "max");
  Tensor values = Tensor::empty(r.result_shape, x.dtype()), indices = Tensor::empty(r.result_shape, kInt64);
  dispatch(x.dtype(), [&]<class T>() {
    const T* p = r.rows.data<T>();
    T* v = values.data<T>();
    int64_t* idx = indices.data<int64_t>();
    parallel_for(r.outer, std::max<int64_t>(1, kElementwiseGrain / r.inner), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const T* row = p + i * r.inner;
        const int64_t best = std::max_element(row, row + r.inner) - row;  // first of ties
        v[i] = row[best];
        idx[i] = best;
      }
    });
  });
  values = record("max", values, {x}, {indices}, [shape = x.shape(), kept = r.kept_shape, dim, indices](const Tensor& g) -> std::vector<Tensor> {
    return {scatter_add(zeros(shape, g.dtype()), dim, reshape(indices, kept), reshape(g, kept))};
  });
  return {values, indices};
}

Tensor max(const Tensor& x) { return amax(x); }

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) { return max(x.detach(), dim, keepdim).second; }

}  // namespace latent

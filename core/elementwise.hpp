// Elementwise kernels: map a function over one tensor, or over two with NumPy broadcasting.
// Contiguous and row-broadcast operands take flat, vectorisable loops split across the pool.
#pragma once
#include <algorithm>
#include <vector>

#include "parallel.hpp"
#include "strided.hpp"

namespace latent {

inline constexpr int64_t kElementwiseGrain = 1 << 15;

// Strides of `t` viewed at the broadcast shape `out` (0 where t is broadcast).
Shape broadcast_strides(const Tensor& t, const Shape& out);

// True when b, broadcast to `shape`, is whole contiguous rows repeated (b = [C], shape = [N, C]).
bool repeats_as_rows(const Tensor& b, const Shape& shape);

// out[i] = f(x[i]), with f called on the element type T; the result has dtype R.
template <class T, class R = T, class F> Tensor map_unary_as(const Tensor& x, F f) {
  const Tensor in = contiguous_copy(x);
  Tensor out = Tensor::empty(x.shape(), dtype_of<R>());
  const T* p = in.data<T>();
  R* q = out.data<R>();
  parallel_for(out.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) q[i] = f(p[i]);
  });
  return out;
}

// out = f(a, b) with broadcasting; a and b have element type T, the result has type R.
template <class T, class R = T, class F>
Tensor map_binary_as(const Tensor& a_in, const Tensor& b_in, const char* op, F f) {
  const Shape shape = broadcast_shapes(a_in.shape(), b_in.shape(), op);
  // A full-size operand read across its rows (a transpose) is copied first: the tiled copy plus a
  // flat loop beats a strided walk that touches a new cache line per element.
  auto dense = [&](const Tensor& t) {
    const bool transposed = t.shape() == shape && t.dim() > 0 && shape.back() > 1 && t.strides().back() != 1 &&
                            t.strides().back() != 0;
    return transposed ? contiguous_copy(t) : t;
  };
  const Tensor a = dense(a_in), b = dense(b_in);
  Tensor out = Tensor::empty(shape, dtype_of<R>());
  const int64_t n = out.numel();
  R* q = out.data<R>();
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  const bool a_full = a.shape() == shape && a.is_contiguous(), b_full = b.shape() == shape && b.is_contiguous();
  if (a_full && b_full) {
    parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) q[i] = f(pa[i], pb[i]);
    });
  } else if (a_full && b.numel() == 1) {
    const T vb = *pb;
    parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) q[i] = f(pa[i], vb);
    });
  } else if (b_full && a.numel() == 1) {
    const T va = *pa;
    parallel_for(n, kElementwiseGrain, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) q[i] = f(va, pb[i]);
    });
  } else if (a_full && repeats_as_rows(b, shape)) {
    const int64_t row = b.numel(), rows = n / row;
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / row), [&](int64_t s, int64_t e) {
      for (int64_t r = s; r < e; ++r)
        for (int64_t i = 0; i < row; ++i) q[r * row + i] = f(pa[r * row + i], pb[i]);
    });
  } else if (n > 0) {
    // Any other layout: rows in parallel, with a flat inner loop whenever an operand is contiguous
    // or constant along the row (column broadcasts like x * rstd[..., None]).
    const Shape sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
    const int64_t inner = shape.back(), ia = sa.back(), ib = sb.back();
    parallel_for(row_count(shape), std::max<int64_t>(1, kElementwiseGrain / inner), [&](int64_t s, int64_t e) {
      for_each_row2(shape, sa, sb, s, e, [&](int64_t r, int64_t oa, int64_t ob) {
        R* o = q + r * inner;
        const T *x = pa + oa, *y = pb + ob;
        if (ia == 1 && ib == 1) {
          for (int64_t i = 0; i < inner; ++i) o[i] = f(x[i], y[i]);
        } else if (ia == 1 && ib == 0) {
          const T v = *y;
          for (int64_t i = 0; i < inner; ++i) o[i] = f(x[i], v);
        } else if (ia == 0 && ib == 1) {
          const T v = *x;
          for (int64_t i = 0; i < inner; ++i) o[i] = f(v, y[i]);
        } else {
          for (int64_t i = 0; i < inner; ++i) o[i] = f(x[i * ia], y[i * ib]);
        }
      });
    });
  }
  return out;
}

// Checks that a and b share a dtype (ops do not promote silently).
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);

}  // namespace latent

// Elementwise kernels: map a function over one tensor, or over two with NumPy broadcasting.
// Contiguous and row-broadcast operands take flat, vectorisable loops split across the pool.
#pragma once
#include <vector>

#include "parallel.hpp"
#include "strided.hpp"

namespace latent {

inline constexpr int64_t kElementwiseGrain = 1 << 15;

// Strides of `t` viewed at the broadcast shape `out` (0 where t is broadcast).
Shape broadcast_strides(const Tensor& t, const Shape& out);

// True when b, broadcast to `shape`, is whole contiguous rows repeated (b = [C], shape = [N, C]).
bool repeats_as_rows(const Tensor& b, const Shape& shape);

// Calls fn(offset_a, offset_b) for every index of `shape` in row-major order.
template <class Fn> void for_each_offset2(const Shape& shape, const Shape& sa, const Shape& sb, Fn&& fn) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  if (shape_numel(shape) == 0) return;
  if (nd == 0) { fn(int64_t{0}, int64_t{0}); return; }
  std::vector<int64_t> index(static_cast<size_t>(nd), 0);
  int64_t a = 0, b = 0;
  const int64_t inner = shape[nd - 1];
  while (true) {
    for (int64_t i = 0; i < inner; ++i) fn(a + i * sa[nd - 1], b + i * sb[nd - 1]);
    int64_t d = nd - 2;
    for (; d >= 0; --d) {
      a += sa[d];
      b += sb[d];
      if (++index[d] < shape[d]) break;
      a -= sa[d] * shape[d];
      b -= sb[d] * shape[d];
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

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
template <class T, class R = T, class F> Tensor map_binary_as(const Tensor& a, const Tensor& b, const char* op, F f) {
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
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
  } else {
    int64_t i = 0;
    for_each_offset2(shape, broadcast_strides(a, shape), broadcast_strides(b, shape),
                     [&](int64_t oa, int64_t ob) { q[i++] = f(pa[oa], pb[ob]); });
  }
  return out;
}

// Checks that a and b share a dtype (ops do not promote silently).
void check_same_dtype(const Tensor& a, const Tensor& b, const char* op);

}  // namespace latent

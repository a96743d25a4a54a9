// Walking strided tensors in row-major order, and copies between layouts and dtypes.
// Internal to the library: kernels build on it; users go through Tensor.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "tensor.hpp"

namespace latent {

// Calls fn(offset) for every element of t in row-major order; offset is relative to t.data<T>().
template <class Fn> void for_each_offset(const Tensor& t, Fn&& fn) {
  const int64_t nd = t.dim();
  if (t.numel() == 0) return;
  if (nd == 0) { fn(int64_t{0}); return; }
  const Shape& shape = t.shape();
  const Shape& strides = t.strides();
  const int64_t inner = shape[nd - 1], inner_stride = strides[nd - 1];
  std::vector<int64_t> index(static_cast<size_t>(nd), 0);
  int64_t base = 0;
  while (true) {
    for (int64_t i = 0; i < inner; ++i) fn(base + i * inner_stride);
    int64_t d = nd - 2;
    for (; d >= 0; --d) {
      base += strides[d];
      if (++index[d] < shape[d]) break;
      base -= strides[d] * shape[d];
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

// Calls fn(row, offset_a, offset_b) for the rows [row_begin, row_end) of `shape` in row-major order,
// a row being the last dim (a 0-dim shape is one row of one element); the offsets, following strides
// sa and sb, locate each row's first element. Parallel kernels hand each chunk of rows to this, so no
// chunk walks from the start, and they choose the inner loop themselves (flat, broadcast, strided).
template <class Fn>
void for_each_row2(const Shape& shape, const Shape& sa, const Shape& sb, int64_t row_begin, int64_t row_end, Fn&& fn) {
  const int64_t nd = static_cast<int64_t>(shape.size());
  if (row_begin >= row_end) return;
  if (nd == 0) { fn(int64_t{0}, int64_t{0}, int64_t{0}); return; }
  // The index over the outer dims; on the stack for any realistic rank.
  int64_t small_index[16];
  std::vector<int64_t> large_index;
  int64_t* index = small_index;
  if (nd > 16) { large_index.resize(static_cast<size_t>(nd)); index = large_index.data(); }
  int64_t a = 0, b = 0, rest = row_begin;
  for (int64_t d = nd - 2; d >= 0; --d) {
    index[d] = rest % shape[d];
    rest /= shape[d];
    a += index[d] * sa[d];
    b += index[d] * sb[d];
  }
  for (int64_t row = row_begin; row < row_end; ++row) {
    fn(row, a, b);
    for (int64_t d = nd - 2; d >= 0; --d) {
      a += sa[d];
      b += sb[d];
      if (++index[d] < shape[d]) break;
      a -= sa[d] * shape[d];
      b -= sb[d] * shape[d];
      index[d] = 0;
    }
  }
}

// Calls fn(offset_a, offset_b) for each element of the rows [row_begin, row_end), in row-major order.
template <class Fn>
void for_each_offset2(const Shape& shape, const Shape& sa, const Shape& sb, int64_t row_begin, int64_t row_end,
                      Fn&& fn) {
  const int64_t inner = shape.empty() ? 1 : shape.back();
  const int64_t inner_a = shape.empty() ? 0 : sa.back(), inner_b = shape.empty() ? 0 : sb.back();
  for_each_row2(shape, sa, sb, row_begin, row_end, [&](int64_t, int64_t a, int64_t b) {
    for (int64_t i = 0; i < inner; ++i) fn(a + i * inner_a, b + i * inner_b);
  });
}

// Number of rows (all dims but the last) of a shape: 1 for 0-dim and 1-D shapes, 0 when empty.
inline int64_t row_count(const Shape& shape) {
  if (shape.empty()) return 1;
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < shape.size(); ++d) rows *= shape[d];
  return shape.back() == 0 ? 0 : rows;
}

// Calls fn(offset_a, offset_b) for every index of `shape` in row-major order.
template <class Fn> void for_each_offset2(const Shape& shape, const Shape& sa, const Shape& sb, Fn&& fn) {
  for_each_offset2(shape, sa, sb, 0, row_count(shape), std::forward<Fn>(fn));
}

// Writes src (same shape, any dtype and strides) into dst (any strides), converting the dtype.
void copy_into(const Tensor& dst, const Tensor& src);
// A fresh contiguous tensor with the same values and dtype (self when already contiguous).
Tensor contiguous_copy(const Tensor& t);
// A fresh contiguous tensor converted to `dtype` (always a new buffer).
Tensor cast_copy(const Tensor& t, DType dtype);

}  // namespace latent

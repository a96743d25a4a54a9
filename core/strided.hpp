// Walking strided tensors in row-major order, and copies between layouts and dtypes.
// Internal to the library: kernels build on it; users go through Tensor.
#pragma once
#include <cstdint>
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

// Writes src (same shape, any dtype and strides) into dst (any strides), converting the dtype.
void copy_into(const Tensor& dst, const Tensor& src);
// A fresh contiguous tensor with the same values and dtype (self when already contiguous).
Tensor contiguous_copy(const Tensor& t);
// A fresh contiguous tensor converted to `dtype` (always a new buffer).
Tensor cast_copy(const Tensor& t, DType dtype);

}  // namespace latent

// Creating tensors: filled, ranged, from host vectors.
#pragma once
#include <memory>
#include <vector>

#include "tensor.hpp"

namespace latent {

Tensor zeros(const Shape& shape, DType dtype = kFloat32);
Tensor ones(const Shape& shape, DType dtype = kFloat32);
Tensor full(const Shape& shape, double value, DType dtype = kFloat32);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
Tensor arange(int64_t n, DType dtype = kInt64);                       // 0, 1, ..., n-1
Tensor arange(int64_t start, int64_t end, int64_t step = 1, DType dtype = kInt64);
Tensor scalar_tensor(double value, DType dtype = kFloat32);           // 0-dim

// Contiguous `shape` of `dtype` over memory latent does not own (a memory-mapped file): `data`
// must be aligned for dtype and stay valid while `keep_alive` (non-null) is held by any handle.
Tensor borrowed_tensor(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keep_alive);

// Like Tensor::empty, but from 1 MiB up the tensor gets memory of its own that goes back to the OS
// when its last handle drops: for a large one-off temporary (a checkpoint tensor on its way into a
// parameter), which the caching allocator would keep for the rest of the process. Smaller ones
// come from the allocator, whose cached blocks of that size cost little.
Tensor empty_uncached(const Shape& shape, DType dtype = kFloat32);

// T = float, double, int64_t or bfloat16. values.size() must equal the product of shape.
template <class T> Tensor from_vector(const std::vector<T>& values, const Shape& shape);
// 1-D shorthand.
template <class T> Tensor from_vector(const std::vector<T>& values) {
  return from_vector(values, Shape{static_cast<int64_t>(values.size())});
}

}  // namespace latent

// Creating tensors: filled, ranged, from host vectors.
#pragma once
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

// T = float, double, int64_t or bfloat16. values.size() must equal the product of shape.
template <class T> Tensor from_vector(const std::vector<T>& values, const Shape& shape);
// 1-D shorthand.
template <class T> Tensor from_vector(const std::vector<T>& values) {
  return from_vector(values, Shape{static_cast<int64_t>(values.size())});
}

}  // namespace latent

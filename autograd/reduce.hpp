// Differentiable reductions over dims ({} = all dims; the result is then a 0-dim scalar).
#pragma once
#include <utility>
#include <vector>

#include "../core/tensor.hpp"

namespace latent {

Tensor sum(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
// Largest value over dims; the gradient is split evenly between tied maxima (as torch.amax).
Tensor amax(const Tensor& x, std::vector<int64_t> dims = {}, bool keepdim = false);
// Largest value along one dim and its index (first of ties); values differentiable, indices Int64.
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x);  // over all elements, 0-dim
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);  // not differentiable

}  // namespace latent

// Selection and ordering: topk values are differentiable, indices and orders are not.
#pragma once
#include <utility>

#include "../core/tensor.hpp"

namespace latent {

// The k largest (or smallest) entries along dim, sorted; ties keep the lower index first.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);
// Stable sort along dim: (values, Int64 indices).
std::pair<Tensor, Tensor> sort(const Tensor& x, int64_t dim = -1, bool descending = false);
Tensor argsort(const Tensor& x, int64_t dim = -1, bool descending = false);

}  // namespace latent

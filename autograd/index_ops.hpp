// Differentiable indexing: gathers pick values by Int64 indices, scatters add them back.
#pragma once
#include "../core/tensor.hpp"

namespace latent {

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);   // index: Int64 [n]
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);         // torch.gather
// x with src's values added at index along dim (torch.scatter_add / index_add, out of place).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
Tensor embedding(const Tensor& weight, const Tensor& ids);                // ids: Int64, any shape

}  // namespace latent

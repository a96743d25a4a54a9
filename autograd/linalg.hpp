// Matrix products on OpenBLAS, split into row blocks across the thread pool.
#pragma once
#include "../core/tensor.hpp"

namespace latent {

// torch.matmul semantics: 1-D operands are promoted, batch dims broadcast. Transposed views are
// passed to BLAS as transposed operands, without a copy.
Tensor matmul(const Tensor& a, const Tensor& b);
// x @ weight^T (+ bias): weight is [out_features, in_features], as in torch.nn.functional.linear.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace latent

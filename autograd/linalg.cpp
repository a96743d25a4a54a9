// matmul and linear: backward is two more matmuls with transposed views (no copies).
#include "linalg.hpp"

#include <algorithm>

#include "../core/gemm.hpp"
#include "elementwise.hpp"
#include "node.hpp"
#include "reduce.hpp"
#include "shape_ops.hpp"

namespace latent {
namespace {

// [..., M, K] @ [..., K, N] with broadcast batch dims.
Tensor batched_matmul(const Tensor& a, const Tensor& b) {
  if (a.size(-1) != b.size(-2))
    throw Error("matmul: " + shape_str(a.shape()) + " @ " + shape_str(b.shape()) + ": inner dimensions " +
                std::to_string(a.size(-1)) + " and " + std::to_string(b.size(-2)) + " differ");
  for (int64_t d = 3; d <= std::min(a.dim(), b.dim()); ++d)  // batch dims, aligned from the right
    if (a.size(-d) != b.size(-d) && a.size(-d) != 1 && b.size(-d) != 1)
      throw Error("matmul: " + shape_str(a.shape()) + " @ " + shape_str(b.shape()) + ": batch dims " +
                  std::to_string(a.size(-d)) + " and " + std::to_string(b.size(-d)) + " cannot be broadcast");
  // dA = dC @ B^T needs B, dB = A^T @ dC needs A: each operand is kept only if the other needs a gradient.
  const Tensor keep_a = b.requires_grad() ? a.detach() : Tensor(), keep_b = a.requires_grad() ? b.detach() : Tensor();
  auto backward = [keep_a, keep_b, shape_a = a.shape(), shape_b = b.shape()](const Tensor& g) -> std::vector<Tensor> {
    return {keep_b.defined() ? sum_to(batched_matmul(g, transpose(keep_b, -1, -2)), shape_a) : Tensor(),
            keep_a.defined() ? sum_to(batched_matmul(transpose(keep_a, -1, -2), g), shape_b) : Tensor()};
  };
  return autograd::record("matmul", matmul_kernel(a, b), {a, b}, std::move(backward));
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (a.dim() == 0 || b.dim() == 0)
    throw Error("matmul: operands must have at least one dim, got " + shape_str(a.shape()) + " @ " + shape_str(b.shape()));
  if (a.dtype() != b.dtype())
    throw Error(std::string("matmul: dtype mismatch, ") + dtype_name(a.dtype()) + " @ " + dtype_name(b.dtype()));
  if (!is_floating(a.dtype())) throw Error("matmul: int64 operands are not supported");
  if (a.dim() == 1 && b.dim() == 1) return reshape(matmul(unsqueeze(a, 0), unsqueeze(b, 1)), {});
  if (a.dim() == 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.dim() == 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);
  if (b.dim() == 2 && a.dim() > 2 && a.size(-1) == b.size(0)) {
    // Fold a's batch dims into rows: one large GEMM instead of many small ones.
    Shape out = a.shape();
    out.back() = b.size(1);
    return reshape(batched_matmul(reshape(a, {-1, a.size(-1)}), b), out);
  }
  return batched_matmul(a, b);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (weight.dim() != 2) throw Error("linear: weight must be [out, in], got " + shape_str(weight.shape()));
  if (x.dim() == 0 || x.size(-1) != weight.size(1))
    throw Error("linear: input " + shape_str(x.shape()) + " does not end in in_features " + std::to_string(weight.size(1)) +
                " of weight " + shape_str(weight.shape()));
  Tensor y = matmul(x, transpose(weight, 0, 1));
  if (bias.defined()) {
    if (bias.shape() != Shape{weight.size(0)})
      throw Error("linear: bias " + shape_str(bias.shape()) + " does not match out_features " + std::to_string(weight.size(0)));
    y = add(y, bias);
  }
  return y;
}

}  // namespace latent

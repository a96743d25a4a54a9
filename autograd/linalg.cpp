// matmul and linear: backward is two more matmuls with transposed views (no copies).
#include "linalg.hpp"

#include <algorithm>

#include "../core/bf16_weights.hpp"
#include "../core/gemm.hpp"
#include "../core/strided.hpp"
#include "elementwise.hpp"
#include "node.hpp"
#include "reduce.hpp"
#include "shape_ops.hpp"

namespace latent {
namespace {

// [..., M, K] @ [..., K, N] with broadcast batch dims.
Tensor batched_matmul(const Tensor& a, const Tensor& b) {
  if (a.size(-1) != b.size(-2))
    fail("matmul: {} @ {}: inner dimensions {} and {} differ", shape_str(a.shape()), shape_str(b.shape()), a.size(-1),
         b.size(-2));
  for (int64_t d = 3; d <= std::min(a.dim(), b.dim()); ++d)  // batch dims, aligned from the right
    if (a.size(-d) != b.size(-d) && a.size(-d) != 1 && b.size(-d) != 1)
      fail("matmul: {} @ {}: batch dims {} and {} cannot be broadcast", shape_str(a.shape()), shape_str(b.shape()),
           a.size(-d), b.size(-d));
  // dA = dC @ B^T needs B, dB = A^T @ dC needs A: each operand is kept only if the other needs a gradient.
  const Tensor keep_a = b.requires_grad() ? a.detach() : Tensor(), keep_b = a.requires_grad() ? b.detach() : Tensor();
  auto backward = [keep_a, keep_b, shape_a = a.shape(), shape_b = b.shape()](const Tensor& g) -> std::vector<Tensor> {
    return {keep_b.defined() ? sum_to(batched_matmul(g, transpose(keep_b, -1, -2)), shape_a) : Tensor(),
            keep_a.defined() ? sum_to(batched_matmul(transpose(keep_a, -1, -2), g), shape_b) : Tensor()};
  };
  return autograd::record("matmul", matmul_kernel(a, b), {a, b}, {keep_a, keep_b}, std::move(backward));
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (a.dim() == 0 || b.dim() == 0)
    fail("matmul: operands must have at least one dim, got {} @ {}", shape_str(a.shape()), shape_str(b.shape()));
  if (a.dtype() != b.dtype()) fail("matmul: dtype mismatch, {} @ {}", dtype_name(a.dtype()), dtype_name(b.dtype()));
  if (!is_floating(a.dtype())) fail("matmul: int64 operands are not supported");
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

// y = x W^T over the rows of x, as one node. Backward: dx = dy W and dW = dy^T x, the latter computed
// directly in W's [out, in] layout: through matmul(x, W^T) it would come out as x^T dy, a transposed
// view that needs a copy before it can accumulate into W's gradient.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (weight.dim() != 2) fail("linear: weight must be [out, in], got {}", shape_str(weight.shape()));
  if (x.dim() == 0 || x.size(-1) != weight.size(1))
    fail("linear: input {} does not end in in_features {} of weight {}", shape_str(x.shape()), weight.size(1),
         shape_str(weight.shape()));
  if (x.dtype() != weight.dtype())
    fail("linear: input is {}, weight is {}", dtype_name(x.dtype()), dtype_name(weight.dtype()));
  if (!is_floating(x.dtype())) fail("linear: int64 operands are not supported");
  const int64_t in = weight.size(1), out = weight.size(0);
  const Tensor flat = contiguous_copy(x);
  const Tensor rows = flat.as_strided({flat.numel() / in, in}, {in, 1}, flat.offset());  // [N, in], no history
  Shape out_shape = x.shape();
  out_shape.back() = out;
  // Under kBFloat16 (float32) each operand is rounded once rather than once per product: a parameter
  // (a leaf) once per optimizer step (core/bf16_weights.hpp: the forward, dx = dy W and the step's
  // other uses share one copy), the input rows once (the forward and dW = dy^T x read the same copy,
  // which is what the backward keeps, at half the size, as PyTorch's autocast keeps its bf16 cast),
  // and dy once for both backward products. matmul_kernel takes bfloat16 operands as they are.
  const bool bf16 = x.dtype() == kFloat32 && get_matmul_precision() == MatmulPrecision::kBFloat16;
  const bool cached_w = bf16 && weight.is_leaf();
  const Tensor w = weight.detach();
  const Tensor w_in = cached_w ? bf16_weight(w) : bf16 ? to_bf16_operand(w) : w;
  const Tensor rows_in = bf16 ? to_bf16_operand(rows) : rows;
  Tensor y;
  if (bf16) {
    y = matmul_kernel(rows_in, transpose(w_in, 0, 1)).as_strided(out_shape, contiguous_strides(out_shape), 0);
  } else {  // written in place: a decoding step allocates nothing beyond its output
    y = Tensor::empty(out_shape, x.dtype());
    matmul_into(rows, w.as_strided({in, out}, {w.stride(1), w.stride(0)}, w.offset()), y);  // rows W^T
  }
  // Each operand is kept only if the other one needs a gradient. A cached weight is kept as itself
  // (its version is checked before the backward, which then finds the same copy).
  const Tensor keep_rows = weight.requires_grad() ? rows_in : Tensor();
  const Tensor keep_w = x.requires_grad() ? (cached_w ? w : w_in) : Tensor();
  y = autograd::record("linear", y, {x, weight}, {keep_rows, keep_w}, [keep_rows, keep_w, x_shape = x.shape(), out, bf16, cached_w](const Tensor& g) -> std::vector<Tensor> {
    const Tensor gc = contiguous_copy(g);
    const Tensor g_rows = gc.as_strided({gc.numel() / out, out}, {out, 1}, gc.offset());  // [N, out]
    const Tensor g_in = bf16 ? to_bf16_operand(g_rows) : g_rows;
    Tensor dx, dw;
    if (keep_w.defined())
      dx = matmul_kernel(g_in, cached_w ? bf16_weight(keep_w) : keep_w).as_strided(x_shape, contiguous_strides(x_shape), 0);
    if (keep_rows.defined()) dw = matmul_kernel(transpose(g_in, 0, 1), keep_rows);  // [out, in]
    return {dx, dw};
  });
  if (bias.defined()) {
    if (bias.shape() != Shape{out})
      fail("linear: bias {} does not match out_features {}", shape_str(bias.shape()), out);
    y = add(y, bias);
  }
  return y;
}

}  // namespace latent

// What the fused-op tests share: evaluating an op's value and input gradients, comparing a fused op
// with its composition from primitive ops, and RoPE composed from primitive ops.
#pragma once
#include "../helpers.hpp"

namespace latent::testing {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// fn(inputs), and the gradients of sum(fn(inputs) * fixed random weights) w.r.t. each input (fresh
// leaves; an input that gets no gradient has an undefined one).
struct Evaluated {
  Tensor value;
  std::vector<Tensor> grads;
};

inline Evaluated evaluate(const OpFn& fn, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) leaves.push_back(t.detach().clone().requires_grad_());
  Evaluated result{fn(leaves), {}};
  Generator gen(99);
  sum(result.value * randn(result.value.shape(), result.value.dtype(), &gen)).backward();
  for (const Tensor& leaf : leaves) result.grads.push_back(leaf.grad());
  return result;
}

// The fused op and its composed reference agree in value and in every input gradient (an undefined
// gradient counts as zeros).
inline void require_same_as_composed(const OpFn& fused, const OpFn& composed, const std::vector<Tensor>& inputs,
                                     double tol) {
  const Evaluated a = evaluate(fused, inputs), b = evaluate(composed, inputs);
  require_close(a.value, b.value, tol);
  for (size_t i = 0; i < inputs.size(); ++i) {
    INFO("gradient of input " << i);
    const Tensor zero = zeros(inputs[i].shape(), inputs[i].dtype());
    require_close(a.grads[i].defined() ? a.grads[i] : zero, b.grads[i].defined() ? b.grads[i] : zero, tol);
  }
}

// RoPE from primitive ops: x [B, T, H, D] as pairs (a, b) = x[..., 2i], x[..., 2i+1], rotated by the
// table rows of `positions`: (a c - b s, a s + b c).
inline Tensor rope_composed(const Tensor& x, const Tensor& cos, const Tensor& sin, const std::vector<int64_t>& positions) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), half = x.size(3) / 2;
  const Tensor pairs = reshape(x, {B, T, H, half, 2});
  const Tensor a = squeeze(narrow(pairs, 4, 0, 1), 4), b = squeeze(narrow(pairs, 4, 1, 1), 4);
  const Tensor rows = from_vector(positions);
  const Tensor c = reshape(index_select(cos, 0, rows), {1, T, 1, half});
  const Tensor s = reshape(index_select(sin, 0, rows), {1, T, 1, half});
  const Tensor rotated = stack({a * c - b * s, a * s + b * c}, 4);
  return reshape(rotated, {B, T, H, 2 * half});
}

}  // namespace latent::testing

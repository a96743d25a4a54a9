// Differentiable ops the layers are built from: softmax family, normalisation, SwiGLU gating, losses,
// dropout.
#pragma once
#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace latent {

// Any dim (negative counts from the end); f32 or f64.
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// Over the last dim: y = weight * x / sqrt(mean(x^2) + eps).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);
// Over the last dim: y = (x - mean) / sqrt(var + eps) * weight + bias; weight and bias may be
// undefined (no affine part).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

// SwiGLU's gating, elementwise over same-shaped gate and up: silu(gate) * up. f32 or f64.
Tensor swiglu(const Tensor& gate, const Tensor& up);
// The loops behind swiglu() over n contiguous elements, for fused callers that run them inside their
// own tasks (DeepSeekMoE's experts); T = float or double. The backward takes the gradient as
// scale * dout and writes dgate and dup, and with `out` also the forward's value again, bit for bit,
// from the sigmoid it computes anyway (no output may alias an input).
template <class T> void swiglu_forward(const T* gate, const T* up, T* out, int64_t n);
template <class T>
void swiglu_backward(const T* gate, const T* up, const T* dout, T scale, T* dgate, T* dup, T* out, int64_t n);

// Fused log-softmax + NLL over [N, C] logits and Int64 [N] targets; mean over the rows whose target
// is not ignore_index (0-dim result; 0 with zero gradients when every row is ignored).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
// NLL over [N, C] log-probabilities, with the same targets and reduction as cross_entropy.
Tensor nll_loss(const Tensor& log_probs, const Tensor& targets, int64_t ignore_index = -100);
Tensor mse_loss(const Tensor& input, const Tensor& target);           // mean squared error

// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !training.
// The mask comes from `gen` (the global generator when null), so a seeded generator reproduces it.
Tensor dropout(const Tensor& x, double p, bool training = true, Generator* gen = nullptr);

}  // namespace latent

// Differentiable ops the layers are built from: softmax family, normalisation, losses, dropout.
#pragma once
#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace latent {

Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);   // over the last dim
// weight and bias may be undefined (no affine part).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

// Fused log-softmax + NLL over [N, C] logits and Int64 [N] targets; mean over the rows whose target
// is not ignore_index (0-dim result).
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
Tensor nll_loss(const Tensor& log_probs, const Tensor& targets, int64_t ignore_index = -100);
Tensor mse_loss(const Tensor& input, const Tensor& target);           // mean squared error

// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when !training.
Tensor dropout(const Tensor& x, double p, bool training = true, Generator* gen = nullptr);

}  // namespace latent

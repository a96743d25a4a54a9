// Gradient clipping by the global L2 norm, as torch.nn.utils.clip_grad_norm_.
#pragma once
#include <vector>

#include "../core/tensor.hpp"

namespace latent::optim {

// The L2 norm of all gradients of `params` taken together (as one concatenated vector), accumulated
// in double in a fixed order (so it does not depend on the thread count). Parameters whose gradient
// is undefined are skipped; with no gradient at all the norm is 0.
double grad_norm(const std::vector<Tensor>& params);

// Computes norm = grad_norm(params) and, as torch.nn.utils.clip_grad_norm_ does, scales every gradient
// in place by max_norm / (norm + 1e-6) when that factor is below 1 (i.e. norm > max_norm up to the 1e-6).
// Returns the norm before clipping.
// A non-finite norm (an inf or NaN somewhere in the gradients) is returned as is and the gradients are
// left untouched: scaling by max_norm / inf would turn them into zeros and NaNs silently. Check the
// result with std::isfinite and skip that optimizer step (as mixed-precision loss scalers do).
// max_norm must be >= 0 (infinity is allowed: nothing is clipped).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace latent::optim

// moe_experts: every SwiGLU expert of a mixture-of-experts layer, routed and shared, as one
// differentiable op that runs each expert as one task over exactly its tokens.
#pragma once
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace latent {

// One SwiGLU expert, expert(x) = (silu(x gate_proj^T) * (x up_proj^T)) down_proj^T, with gate_proj and
// up_proj [I, D] and down_proj [D, I] (I may differ between experts). `label` says where the expert
// lives for anomaly messages, as a module path ("model.layers.2.mlp.experts.5"): a non-finite value
// made by its down projection is reported in module "<label>.down_proj". Empty: the module whose
// forward called the op.
struct ExpertWeights {
  Tensor gate_proj, up_proj, down_proj;
  std::string label;
};

// For x [N, D], gate weights [N, K] and Int64 expert_ids [N, K] with values in [0, experts.size()):
//   y[n] = shared(x[n]) + sum over k of weights[n, k] * experts[expert_ids[n, k]](x[n])     y [N, D]
// with the shared term absent when shared.gate_proj is undefined. Each token sums its terms in slot
// order (shared first), so y does not depend on the thread count. An expert no token picks costs
// nothing and gets no gradient. f32 or f64: weights and every expert weight (contiguous) of x's dtype.
// In anomaly mode the op checks every expert's intermediate results and gradients itself and names
// the expert and projection that made a NaN or Inf.
Tensor moe_experts(const Tensor& x, const Tensor& weights, const Tensor& expert_ids,
                   const std::vector<ExpertWeights>& experts, const ExpertWeights& shared = {});

}  // namespace latent

// Routing health of a mixture-of-experts model, as metrics columns: per MoE layer, from the expert
// loads of the last training step (the global batch's, once DataParallel has summed them), how
// unequal the loads are and how far the correction biases have spread. Dense models have none.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "../models/causal_lm.hpp"

namespace latent::train {

// Per layer "moe<L>_max_over_mean", "moe<L>_min_share", and "moe<L>_bias_spread" where the layer has
// correction biases (L: the layer's index in "model.layers.L.mlp").
std::vector<std::string> routing_columns(const std::vector<models::RoutingStatistics>& layers);

// max load / mean load (1 is perfect balance), the least-loaded expert's share of all assignments
// (0: an expert starves), and the spread max(b) - min(b) of the biases aux-loss-free balancing built.
struct RoutingHealth {
  std::map<std::string, double> columns;
  double worst_imbalance = 0;  // max over layers of max load / mean load; 0 without MoE layers
};
RoutingHealth routing_health(const std::vector<models::RoutingStatistics>& layers);

}  // namespace latent::train

// Routing-health columns from the routing statistics of the last step.
#include "routing_health.hpp"

#include <algorithm>

#include "../core/factory.hpp"

namespace latent::train {

namespace {

// "model.layers.3.mlp" -> "moe3".
std::string routing_tag(const std::string& layer_name) {
  const std::string prefix = "model.layers.";
  const std::string layer = layer_name.rfind(prefix, 0) == 0 ? layer_name.substr(prefix.size()) : layer_name;
  return "moe" + layer.substr(0, layer.find('.'));
}

}  // namespace

std::vector<std::string> routing_columns(const std::vector<models::RoutingStatistics>& layers) {
  std::vector<std::string> cols;
  for (const models::RoutingStatistics& layer : layers) {
    const std::string tag = routing_tag(layer.layer);
    cols.insert(cols.end(), {tag + "_max_over_mean", tag + "_min_share"});
    if (layer.correction_bias.defined()) cols.push_back(tag + "_bias_spread");
  }
  return cols;
}

RoutingHealth routing_health(const std::vector<models::RoutingStatistics>& layers) {
  RoutingHealth h;
  for (const models::RoutingStatistics& layer : layers) {
    if (!layer.loads.defined()) continue;
    const std::vector<int64_t> loads = layer.loads.to_vector<int64_t>();
    double total = 0, most = 0, least = 1e300;
    for (int64_t c : loads) total += double(c), most = std::max(most, double(c)), least = std::min(least, double(c));
    const double mean = total / double(loads.size());
    const std::string tag = routing_tag(layer.layer);
    h.columns[tag + "_max_over_mean"] = most / mean;
    h.columns[tag + "_min_share"] = least / total;
    if (layer.correction_bias.defined()) {
      const std::vector<double> b = layer.correction_bias.to(kFloat64).to_vector<double>();
      h.columns[tag + "_bias_spread"] = *std::max_element(b.begin(), b.end()) - *std::min_element(b.begin(), b.end());
    }
    h.worst_imbalance = std::max(h.worst_imbalance, most / mean);
  }
  return h;
}

}  // namespace latent::train

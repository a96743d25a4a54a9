// Token sampling shared by every model's generate().
#include "sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace latent::models {

int64_t pick_next_token(const std::vector<double>& logits, double temperature, int64_t top_k, Generator& gen) {
  if (temperature == 0) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  std::vector<int64_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  const size_t keep = top_k > 0 ? std::min(size_t(top_k), order.size()) : order.size();
  // Unnormalised weights exp((l - l_max) / temperature): the shift keeps exp in range.
  std::vector<double> weights(keep);
  for (size_t i = 0; i < keep; ++i) weights[i] = std::exp((logits[size_t(order[i])] - logits[size_t(order[0])]) / temperature);
  double r = gen.uniform(gen.advance(1)) * std::accumulate(weights.begin(), weights.end(), 0.0);
  size_t pick = 0;
  while (pick + 1 < keep && r >= weights[pick]) r -= weights[pick++];
  return order[pick];
}

}  // namespace latent::models

// Choosing the next token from logits: greedy, or a seeded draw at a temperature among the top-k.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/random.hpp"

namespace latent::models {

// What every model's generate() takes.
struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: all tokens
  uint64_t seed = 0;
};

// temperature 0: the first maximum. Otherwise a draw from softmax(logits / temperature) restricted to
// the top_k most likely tokens (0: all), using one counter of `gen`.
int64_t pick_next_token(const std::vector<double>& logits, double temperature, int64_t top_k, Generator& gen);

}  // namespace latent::models

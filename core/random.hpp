// Seedable, counter-based random numbers (Philox-4x32-10): element i of a draw depends only on the
// seed, the generator's offset and i, so results never depend on the thread count.
#pragma once
#include <cstdint>

#include "tensor.hpp"

namespace latent {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }          // counters consumed so far
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  void manual_seed(uint64_t seed) { set_state(seed, 0); }
  // Reserves n counters; returns the first.
  uint64_t advance(uint64_t n) { const uint64_t first = offset_; offset_ += n; return first; }

  double uniform(uint64_t counter) const;  // in [0, 1), from one counter
  double normal(uint64_t counter) const;   // standard normal (Box-Muller), from one counter

 private:
  uint64_t seed_, offset_ = 0;
};

Generator& default_generator();
void manual_seed(uint64_t seed);  // seeds the global generator

Tensor randn(const Shape& shape, DType dtype = kFloat32, Generator* gen = nullptr);
Tensor rand(const Shape& shape, DType dtype = kFloat32, Generator* gen = nullptr);   // uniform [0, 1)
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator* gen = nullptr);  // Int64 in [low, high)
Tensor randperm(int64_t n, Generator* gen = nullptr);                                  // Int64
// In place, no autograd (initialisers).
Tensor& normal_(Tensor& t, double mean = 0.0, double std = 1.0, Generator* gen = nullptr);
Tensor& uniform_(Tensor& t, double low = 0.0, double high = 1.0, Generator* gen = nullptr);

}  // namespace latent

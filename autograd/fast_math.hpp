// Elementary functions in forms GCC vectorises without -ffast-math (std::exp and std::floor are not),
// for the fused kernels' inner loops: exp of non-positive arguments and the logistic sigmoid.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace latent::fast_math {

// exp(x) for x <= 0 (a score minus its row max or logsumexp, or -|x|): x = n ln2 + r with
// |r| <= ln2/2, exp(x) = 2^n p(r), p the polynomial of Cephes' expf (relative error < 1e-7). x is
// clamped at -87 so that 2^n stays a normal float; the clamped values (< 2e-38) are negligible
// against the exp(0) = 1 they are summed or compared with. n is rounded by adding and removing
// 1.5 * 2^23. Double precision keeps std::exp: its callers are gradchecks, not hot loops.
// Every multiply-add is an explicit fma: the compiler vectorises these loops but also keeps scalar
// paths (remainders, run-time alias checks) and, left to itself, may fuse different pairs in each,
// so the same input could round differently depending on where a buffer happens to sit in memory.
inline float exp_nonpositive(float x) {
  constexpr float kRound = 12582912.0f;
  x = std::max(x, -87.0f);
  const float n = std::fma(x, 1.44269504088896341f, kRound) - kRound;
  float r = std::fma(n, -0.693359375f, x);  // ln2 split in two for an exact first product
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r) + 1.0f;
  // A NaN input must come out NaN (p already is), not reach the float -> int conversion (UB).
  return p * std::bit_cast<float>((static_cast<int32_t>(n == n ? n : 0.0f) + 127) << 23);
}
inline double exp_nonpositive(double x) { return std::exp(x); }

// sigmoid(x) = 1 / (1 + exp(-x)) from e = exp(-|x|) <= 1, which never overflows:
// 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0 (both sides computed, then selected: vectorisable).
template <class T> inline T sigmoid(T x) {
  const T e = exp_nonpositive(-std::abs(x));
  const T inverse = T(1) / (T(1) + e);
  return x >= T(0) ? inverse : e * inverse;
}

// Sum and max of x[0..n) through kLanes interleaved partial results combined in a fixed order:
// vectorisable, and the same bits whatever the thread count or the buffer's alignment.
constexpr int kLanes = 16;
template <class T, class Op> inline T lane_reduce(const T* x, int64_t n, T init, Op op) {
  T lanes[kLanes];
  std::fill_n(lanes, kLanes, init);
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] = op(lanes[l], x[c + l]);
  T total = init;
  for (int l = 0; l < kLanes; ++l) total = op(total, lanes[l]);
  for (; c < n; ++c) total = op(total, x[c]);
  return total;
}
template <class T> inline T lane_sum(const T* x, int64_t n) {
  return lane_reduce(x, n, T(0), [](T a, T b) { return a + b; });
}
template <class T> inline T lane_max(const T* x, int64_t n) {
  return lane_reduce(x, n, -std::numeric_limits<T>::infinity(), [](T a, T b) { return std::max(a, b); });
}

}  // namespace latent::fast_math

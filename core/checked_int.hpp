// int64 arithmetic that throws checked::Overflow instead of wrapping: for sizes computed from
// untrusted input (config files), where a wrapped product would pass every later check.
#pragma once
#include <cstdint>

namespace latent::checked {

struct Overflow {};

inline int64_t add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw Overflow{};
  return r;
}

inline int64_t mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw Overflow{};
  return r;
}

}  // namespace latent::checked

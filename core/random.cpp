// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
#include "random.hpp"

#include <array>
#include <cmath>
#include <numbers>

#include "parallel.hpp"
#include "strided.hpp"

namespace latent {
namespace {

std::array<uint32_t, 4> philox(uint64_t counter, uint64_t key) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u, kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  std::array<uint32_t, 4> c = {uint32_t(counter), uint32_t(counter >> 32), 0u, 0u};
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kMul0) * c[0], p1 = uint64_t(kMul1) * c[2];
    c = {uint32_t(p1 >> 32) ^ c[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k1, uint32_t(p0)};
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return c;
}

// 53 random bits -> [0, 1)
double to_unit(uint32_t hi, uint32_t lo) { return double((uint64_t(hi) << 21) ^ lo) * 0x1.0p-53; }

// Element i of contiguous `out` becomes T(draw(counter i)), then T(finish(that value)).
template <class Draw, class Finish> void fill_random_into(const Tensor& out, Generator* gen, Draw draw, Finish finish) {
  Generator& g = gen ? *gen : default_generator();
  const int64_t n = out.numel();
  const uint64_t first = g.advance(static_cast<uint64_t>(n));
  dispatch(out.dtype(), [&]<class T>() {
    T* p = out.data<T>();
    parallel_for(n, 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        p[i] = static_cast<T>(draw(g, first + static_cast<uint64_t>(i)));
        p[i] = static_cast<T>(finish(p[i]));
      }
    });
  });
}

template <class Draw> Tensor fill_random(const Shape& shape, DType dtype, Generator* gen, Draw draw) {
  Tensor out = Tensor::empty(shape, dtype);
  fill_random_into(out, gen, draw, [](auto value) { return value; });
  return out;
}

// t = T(shift + scale * T(draw)) elementwise. A contiguous t is drawn into directly: initialising
// a parameter then needs no temporary of its size, which the allocator would keep cached (a model
// built to load a checkpoint into would peak at its size plus its largest tensor).
template <class Draw> Tensor& fill_random_(Tensor& t, Generator* gen, Draw draw, double scale, double shift,
                                           const char* op) {
  check_floating(t.dtype(), op);
  const auto affine = [scale, shift](auto value) { return shift + scale * value; };
  if (!t.is_contiguous()) {
    const Tensor draws = Tensor::empty(t.shape(), t.dtype());
    fill_random_into(draws, gen, draw, affine);
    return t.copy_(draws);
  }
  fill_random_into(t, gen, draw, affine);
  t.bump_version();
  return t;
}

}  // namespace

double Generator::uniform(uint64_t counter) const {
  const auto r = philox(counter, seed_);
  return to_unit(r[0], r[1]);
}

double Generator::normal(uint64_t counter) const {
  const auto r = philox(counter, seed_);
  const double u1 = 1.0 - to_unit(r[0], r[1]);  // (0, 1]: log is finite
  const double u2 = to_unit(r[2], r[3]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

Generator& default_generator() {
  static Generator instance(0);
  return instance;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

Tensor randn(const Shape& shape, DType dtype, Generator* gen) {
  check_floating(dtype, "randn");
  return fill_random(shape, dtype, gen, [](const Generator& g, uint64_t c) { return g.normal(c); });
}

Tensor rand(const Shape& shape, DType dtype, Generator* gen) {
  check_floating(dtype, "rand");
  return fill_random(shape, dtype, gen, [](const Generator& g, uint64_t c) { return g.uniform(c); });
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator* gen) {
  if (high <= low) fail("randint: empty range [{}, {})", low, high);
  const double span = static_cast<double>(high - low);
  return fill_random(shape, kInt64, gen, [&](const Generator& g, uint64_t c) {
    return std::min<int64_t>(high - 1, low + static_cast<int64_t>(g.uniform(c) * span));
  });
}

Tensor randperm(int64_t n, Generator* gen) {
  if (n < 0) fail("randperm: negative n {}", n);
  Generator& g = gen ? *gen : default_generator();
  const uint64_t first = g.advance(static_cast<uint64_t>(n));
  Tensor out = Tensor::empty({n}, kInt64);
  int64_t* p = out.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {  // Fisher-Yates, one counter per swap
    const int64_t j = std::min<int64_t>(i, static_cast<int64_t>(g.uniform(first + uint64_t(i)) * double(i + 1)));
    std::swap(p[i], p[j]);
  }
  return out;
}

Tensor& normal_(Tensor& t, double mean, double std, Generator* gen) {
  return fill_random_(t, gen, [](const Generator& g, uint64_t c) { return g.normal(c); }, std, mean, "normal_");
}

Tensor& uniform_(Tensor& t, double low, double high, Generator* gen) {
  return fill_random_(t, gen, [](const Generator& g, uint64_t c) { return g.uniform(c); }, high - low, low, "uniform_");
}

}  // namespace latent

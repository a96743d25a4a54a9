// latent's own bfloat16 kernels on one thread: gemm_bf16_small at attention's block-product shapes in
// the `small` model's training step (autograd/attention.cpp), gemv_bf16 at a decoding step's one-row
// products, and the float32 -> bfloat16 rounding of the products' operands (core/gemm.hpp). Prints the
// best and the median of many calls (the best is the steadier figure on a shared machine); see
// bench/README.md.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <latent/latent.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/gemm.hpp"
#include "core/gemm_bf16_small.hpp"
#include "core/gemv_bf16.hpp"

namespace {

using namespace latent;

struct Product {
  std::string name;
  bool ta, tb;
  int64_t M, N, K;
  float alpha, beta;
};

// The best and the median wall time of `repeats` calls, after ten warm-up calls.
std::pair<double, double> best_and_median(const std::function<void()>& call, int repeats) {
  std::vector<double> seconds;
  for (int i = 0; i < repeats + 10; ++i) {
    const auto start = std::chrono::steady_clock::now();
    call();
    if (i >= 10) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return {seconds.front(), seconds[seconds.size() / 2]};
}

// Row-major operands as the kernels read them: A [M, K] or (ta) [K, M], B [K, N] or (tb) [N, K].
void time_product(const Product& s, int repeats) {
  Generator gen(1);
  auto operand = [&](int64_t n) { return randn({n}, kFloat32, &gen).to(kBFloat16).to_vector<bfloat16>(); };
  const std::vector<bfloat16> a = operand(s.M * s.K), b = operand(s.K * s.N);
  std::vector<float> c(static_cast<size_t>(s.M * s.N), 0.0f);
  const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
  const std::function<void()> call = [&] {
    if (s.M == 1)
      gemv_bf16(s.tb, s.N, s.K, s.alpha, a.data(), 1, b.data(), ldb, s.beta, c.data());
    else
      gemm_bf16_small(s.ta, s.tb, s.M, s.N, s.K, s.alpha, a.data(), lda, b.data(), ldb, s.beta, c.data(), s.N);
  };
  const auto [best, median] = best_and_median(call, repeats);
  fmt::print("{:<26} {:>12} {:>9.2f} {:>9.2f} {:>9.1f}\n", s.name, fmt::format("{}x{}x{}", s.M, s.N, s.K), best * 1e6,
             median * 1e6, 2.0 * static_cast<double>(s.M * s.N * s.K) / best * 1e-9);
}

// round_to_bf16 over `rows` rows of `cols` floats, rows `ld` apart, into a packed copy.
void time_rounding(const std::string& name, int64_t rows, int64_t cols, int64_t ld, int repeats) {
  Generator gen(1);
  const std::vector<float> src = randn({rows * ld}, kFloat32, &gen).to_vector<float>();
  std::vector<bfloat16> dst(static_cast<size_t>(rows * cols));
  const auto [best, median] =
      best_and_median([&] { round_to_bf16(src.data(), rows, cols, ld, dst.data()); }, repeats);
  const double elements = static_cast<double>(rows * cols);
  fmt::print("{:<26} {:>12} {:>9.2f} {:>9.2f} {:>9.3f}\n", name, fmt::format("{}x{}", rows, cols), best * 1e6,
             median * 1e6, best / elements * 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 2000;
  if (repeats < 1) {
    fmt::print(stderr, "usage: bf16_kernels [repeats >= 1]\n");
    return 1;
  }
  if (!cpu_has_avx512_bf16()) {
    fmt::print(stderr, "bf16_kernels: this CPU lacks AVX-512 BF16, which the kernels need\n");
    return 1;
  }
  // Attention at B8 T256, q/k head dim 48, v head dim 32, blocks of 64 keys; rows seeing a block are
  // 256, 192, 128 or 64 (causal). Decoding: one token through a 256 -> 768 linear layer.
  const std::vector<Product> products = {
      {"scores q k^T, 256 rows", false, true, 256, 64, 48, 0.144f, 0.0f},
      {"scores q k^T, 64 rows", false, true, 64, 64, 48, 0.144f, 0.0f},
      {"o += p v, 128 rows", false, false, 128, 32, 64, 1.0f, 1.0f},
      {"o += p v, 64 rows", false, false, 64, 32, 64, 1.0f, 1.0f},
      {"dv = p^T do, 256 rows", true, false, 64, 32, 256, 1.0f, 0.0f},
      {"dp = do v^T, 256 rows", false, true, 256, 64, 32, 1.0f, 0.0f},
      {"dq += ds k, 256 rows", false, false, 256, 48, 64, 0.144f, 1.0f},
      {"dk = ds^T q, 256 rows", true, false, 64, 48, 256, 0.144f, 0.0f},
      {"decoding: one row x W^T", false, true, 1, 768, 256, 1.0f, 0.0f},
  };
  fmt::print("latent bench/bf16_kernels: one thread, best and median of {} calls\n", repeats);
  fmt::print("{:<26} {:>12} {:>9} {:>9} {:>9}\n", "product", "MxNxK", "best us", "median us", "GFLOP/s");
  for (const Product& p : products) time_product(p, repeats);
  // Rounding: a block of attention scores (packed: one flat run), and attention's output rows (32
  // values of each head, 256 apart in a position's row of all heads).
  fmt::print("{:<26} {:>12} {:>9} {:>9} {:>9}\n", "rounding to bfloat16", "rows x cols", "best us", "median us",
             "ns/value");
  time_rounding("scores, 256 rows", 256, 64, 64, repeats);
  time_rounding("output rows of one head", 256, 32, 256, repeats);
  return 0;
}

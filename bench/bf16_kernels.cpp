// latent's own bfloat16 product kernels on one thread: gemm_bf16_small at attention's block-product
// shapes in the `small` model's training step (autograd/attention.cpp), and gemv_bf16 at a decoding
// step's one-row products. Prints the best and the median of many calls (the best is the steadier
// figure on a shared machine); see bench/README.md.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <latent/latent.hpp>
#include <string>
#include <vector>

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
  std::vector<double> seconds;
  for (int i = 0; i < repeats + 10; ++i) {
    const auto start = std::chrono::steady_clock::now();
    call();
    if (i >= 10) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double best = seconds.front(), median = seconds[seconds.size() / 2];
  fmt::print("{:<26} {:>12} {:>9.2f} {:>9.2f} {:>9.1f}\n", s.name, fmt::format("{}x{}x{}", s.M, s.N, s.K), best * 1e6,
             median * 1e6, 2.0 * static_cast<double>(s.M * s.N * s.K) / best * 1e-9);
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
  return 0;
}

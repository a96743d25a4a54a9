// Causal attention forward and backward at the `small` DeepSeek-V3's training shapes (B8, 8 heads,
// T256, q/k head dim 48, v head dim 32, heads interleaved per position as MLA lays them out), at
// float32 and at MatmulPrecision::kBFloat16, on latent's pool. Prints medians; see bench/README.md.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <latent/latent.hpp>
#include <vector>

namespace {

using namespace latent;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

void run(MatmulPrecision precision, int repeats) {
  constexpr int64_t B = 8, T = 256, H = 8, Dqk = 48, Dv = 32;
  MatmulPrecisionGuard guard(precision);
  Generator gen(1);
  // [B, T, H, D] permuted to [B, H, T, D], as MLA hands them to attention.
  auto heads = [&](int64_t D) { return randn({B, T, H, D}, kFloat32, &gen).requires_grad_(); };
  const Tensor q = heads(Dqk), k = heads(Dqk), v = heads(Dv);
  const Tensor dout = randn({B, H, T, Dv}, kFloat32, &gen);
  std::vector<double> forward, backward;
  for (int i = 0; i < repeats + 2; ++i) {  // two warm-up calls
    auto start = std::chrono::steady_clock::now();
    const Tensor out = scaled_dot_product_attention(q.permute({0, 2, 1, 3}), k.permute({0, 2, 1, 3}),
                                                    v.permute({0, 2, 1, 3}), true);
    const double f = seconds_since(start);
    start = std::chrono::steady_clock::now();
    out.backward(dout);
    const double b = seconds_since(start);
    if (i >= 2) forward.push_back(f), backward.push_back(b);
  }
  fmt::print("{:<5} forward {:6.2f} ms  backward {:6.2f} ms  (medians of {})\n", matmul_precision_name(precision),
             median(forward) * 1e3, median(backward) * 1e3, repeats);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 50;
  fmt::print("latent bench/attention: B8 H8 T256 Dqk48 Dv32, causal, {} threads\n", get_num_threads());
  run(MatmulPrecision::kHighest, repeats);
  std::string why;
  if (bf16_matmul_supported(&why))
    run(MatmulPrecision::kBFloat16, repeats);
  else
    fmt::print("bf16  not run: {}\n", why);
}

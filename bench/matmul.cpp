// GEMM and elementwise throughput: latent::matmul against direct cblas_sgemm calls, at float32 and
// under MatmulPrecision::kBFloat16, and add/mul bandwidth, single-threaded and on latent's pool.
// Prints medians of repeated runs; see bench/README.md.
#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <latent/latent.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using latent::Tensor;

// Median wall time of fn in seconds: two warm-up calls, then repeats until both a minimum count
// and a minimum total time are reached (short kernels get many samples, long ones at least five).
double median_seconds(const std::function<void()>& fn, int min_repeats) {
  fn();
  fn();
  std::vector<double> samples;
  double total = 0;
  while (static_cast<int>(samples.size()) < min_repeats || (total < 0.5 && samples.size() < 200)) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    samples.push_back(s);
    total += s;
  }
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(samples.size() / 2), samples.end());
  return samples[samples.size() / 2];
}

struct GemmShape {
  std::string name;
  int64_t batch, M, K, N;
};

// One single-threaded cblas_sgemm per batch entry on contiguous row-major buffers: the floor latent's
// dispatch (views, blocks, tasks) should not fall below.
void direct_sgemm(const GemmShape& s, const float* a, const float* b, float* c) {
  for (int64_t i = 0; i < s.batch; ++i)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(s.M), int(s.N), int(s.K), 1.0f, a + i * s.M * s.K,
                int(s.K), b + i * s.K * s.N, int(s.N), 0.0f, c + i * s.M * s.N, int(s.N));
}

void bench_gemm(int pool_threads, int min_repeats) {
  const std::vector<GemmShape> shapes = {
      {"2048x256 @ 256x768", 1, 2048, 256, 768},     {"512x512 @ 512x512", 1, 512, 512, 512},
      {"64x4096 @ 4096x256", 1, 64, 4096, 256},      {"32 x (256x48 @ 48x256)", 32, 256, 48, 256},
      {"32 x (256x256 @ 256x48)", 32, 256, 256, 48}, {"256x48 @ 48x64", 1, 256, 48, 64},
      {"128x256 @ 256x128", 1, 128, 256, 128},
  };
  fmt::print("GEMM, float32, GFLOP/s (median)\n");
  fmt::print("{:<26} {:>12} {:>12} {:>12} {:>14} {:>12} {:>12} {:>12}\n", "shape", "cblas 1T", "latent 1T",
             fmt::format("latent {}T", pool_threads), fmt::format("BLAS own {}T", pool_threads), "latent a^T@b",
             "bf16 1T", fmt::format("bf16 {}T", pool_threads));
  latent::Generator gen(0);
  for (const GemmShape& s : shapes) {
    const Tensor a = s.batch == 1 ? latent::randn({s.M, s.K}, latent::kFloat32, &gen)
                                  : latent::randn({s.batch, s.M, s.K}, latent::kFloat32, &gen);
    const Tensor b = s.batch == 1 ? latent::randn({s.K, s.N}, latent::kFloat32, &gen)
                                  : latent::randn({s.batch, s.K, s.N}, latent::kFloat32, &gen);
    // The same product with a stored transposed: BLAS reads the view as a transposed operand.
    const Tensor a_stored_t = a.transpose(-1, -2).contiguous().transpose(-1, -2);
    std::vector<float> c(static_cast<size_t>(s.batch * s.M * s.N));
    const double flops = 2.0 * double(s.batch) * double(s.M) * double(s.N) * double(s.K);
    auto gflops = [&](double seconds) { return flops / seconds * 1e-9; };

    latent::set_num_threads(1);  // also pins OpenBLAS to one thread
    const double cblas_1 =
        median_seconds([&] { direct_sgemm(s, a.data<float>(), b.data<float>(), c.data()); }, min_repeats);
    const double latent_1 = median_seconds([&] { latent::matmul(a, b); }, min_repeats);
    latent::set_num_threads(pool_threads);
    const double latent_n = median_seconds([&] { latent::matmul(a, b); }, min_repeats);
    const double latent_t = median_seconds([&] { latent::matmul(a_stored_t, b); }, min_repeats);
    openblas_set_num_threads(pool_threads);  // the policy latent rejects, for reference only
    const double blas_n =
        median_seconds([&] { direct_sgemm(s, a.data<float>(), b.data<float>(), c.data()); }, min_repeats);
    openblas_set_num_threads(1);
    // bf16 operands rounded from the float32 ones on every call, as a product of activations is.
    const latent::MatmulPrecisionGuard bf16(latent::MatmulPrecision::kBFloat16);
    const double bf16_n = median_seconds([&] { latent::matmul(a, b); }, min_repeats);
    latent::set_num_threads(1);
    const double bf16_1 = median_seconds([&] { latent::matmul(a, b); }, min_repeats);
    fmt::print("{:<26} {:>12.1f} {:>12.1f} {:>12.1f} {:>14.1f} {:>12.1f} {:>12.1f} {:>12.1f}\n", s.name,
               gflops(cblas_1), gflops(latent_1), gflops(latent_n), gflops(blas_n), gflops(latent_t), gflops(bf16_1),
               gflops(bf16_n));
  }
}

void bench_elementwise(int pool_threads, int min_repeats) {
  const int64_t rows = 4096, cols = 1024;  // 4 Mi floats, 16 MiB per operand: beyond the caches
  latent::Generator gen(1);
  const Tensor x = latent::randn({rows, cols}, latent::kFloat32, &gen),
               y = latent::randn({rows, cols}, latent::kFloat32, &gen);
  const Tensor column = latent::randn({rows, 1}, latent::kFloat32, &gen);
  const double full_bytes = 3.0 * double(rows * cols) * sizeof(float);  // two reads, one write
  const double column_bytes = 2.0 * double(rows * cols) * sizeof(float);
  struct Case {
    std::string name;
    double bytes;
    std::function<void()> run;
  };
  const std::vector<Case> cases = {
      {"add [4096,1024] + [4096,1024]", full_bytes, [&] { x + y; }},
      {"mul [4096,1024] * [4096,1024]", full_bytes, [&] { x* y; }},
      {"mul [4096,1024] * [4096,1]", column_bytes, [&] { x* column; }},
      {"add x^T + y^T (strided)", full_bytes, [&] { x.t() + y.t(); }},
      {"contiguous(x^T)", 2.0 * double(rows * cols) * sizeof(float), [&] { x.t().contiguous(); }},
      // The float32 -> bf16 rounding every bf16 GEMM operand goes through (4 bytes read, 2 written).
      {"x.to(bfloat16)", 6.0 * double(rows * cols), [&] { x.to(latent::kBFloat16); }},
  };
  fmt::print("\nElementwise, float32, GB/s (median; bytes = operands read + result written)\n");
  fmt::print("{:<34} {:>12} {:>12}\n", "op", "latent 1T", fmt::format("latent {}T", pool_threads));
  for (const Case& c : cases) {
    latent::set_num_threads(1);
    const double one = median_seconds(c.run, min_repeats);
    latent::set_num_threads(pool_threads);
    const double pool = median_seconds(c.run, min_repeats);
    fmt::print("{:<34} {:>12.1f} {:>12.1f}\n", c.name, c.bytes / one * 1e-9, c.bytes / pool * 1e-9);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int min_repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 9;
  const int pool_threads = latent::get_num_threads();  // LATENT_NUM_THREADS, else the hardware threads
  fmt::print("latent bench/matmul: pool of {} threads, {} hardware threads, OpenBLAS {}\n\n", pool_threads,
             std::thread::hardware_concurrency(), openblas_get_config());
  bench_gemm(pool_threads, min_repeats);
  bench_elementwise(pool_threads, min_repeats);
  latent::set_num_threads(pool_threads);
  return 0;
}

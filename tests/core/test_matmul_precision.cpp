// MatmulPrecision: the setting and its guard, bfloat16 GEMMs against float64 products of the
// bfloat16-rounded operands, float64 untouched, and bitwise determinism across thread counts.
#include <cmath>
#include <filesystem>
#include <thread>

#include "../helpers.hpp"
#include "core/bf16_weights.hpp"
#include "core/gemm.hpp"

using namespace latent;
using latent::testing::bf16_available;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

Tensor randn32(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return randn(shape, kFloat32, &gen);
}

// float64 product of the operands rounded to bfloat16, and the scale of each entry's terms
// (sum |a| |b|) that bounds float32 accumulation error.
struct Reference {
  std::vector<double> product, magnitude;
};

Reference reference_of_bf16(const Tensor& a, const Tensor& b) {
  const Tensor a64 = a.to(kBFloat16).to(kFloat64), b64 = b.to(kBFloat16).to(kFloat64);
  return {matmul(a64, b64).to_vector<double>(), matmul(abs(a64), abs(b64)).to_vector<double>()};
}

// Every entry within float32 accumulation error of the bf16-operand reference: K roundings of at
// most 2^-24 each, relative to sum |a| |b|.
void require_bf16_product(const Tensor& got, const Reference& ref, int64_t K) {
  const std::vector<double> c = got.to(kFloat64).to_vector<double>();
  REQUIRE(c.size() == ref.product.size());
  const double bound = static_cast<double>(K) * 0x1p-24;
  for (size_t i = 0; i < c.size(); ++i) {
    INFO("entry " << i << ": got " << c[i] << ", reference " << ref.product[i]);
    REQUIRE(std::abs(c[i] - ref.product[i]) <= bound * ref.magnitude[i]);
  }
}

// The largest |c - exact| / sum |a||b| over all entries, against the float64 product of the
// unrounded operands: about 2^-9 when operands were rounded to bfloat16, ~1e-7 in float32.
double relative_error_vs_exact(const Tensor& got, const Tensor& a, const Tensor& b) {
  const Tensor a64 = a.to(kFloat64), b64 = b.to(kFloat64);
  const std::vector<double> c = got.to(kFloat64).to_vector<double>(), exact = matmul(a64, b64).to_vector<double>(),
                            mag = matmul(abs(a64), abs(b64)).to_vector<double>();
  double worst = 0;
  for (size_t i = 0; i < c.size(); ++i) worst = std::max(worst, std::abs(c[i] - exact[i]) / mag[i]);
  return worst;
}

}  // namespace

TEST_CASE("matmul precision: set, get, guard, parse, refusal", "[matmul_precision]") {
  CHECK(get_matmul_precision() == MatmulPrecision::kHighest);
  CHECK(parse_matmul_precision("fp32") == MatmulPrecision::kHighest);
  CHECK(parse_matmul_precision("bf16") == MatmulPrecision::kBFloat16);
  CHECK(std::string(matmul_precision_name(MatmulPrecision::kBFloat16)) == "bf16");
  CHECK_THROWS_WITH(parse_matmul_precision("fp8"), "matmul precision: expected fp32 or bf16, got 'fp8'");
  std::string why;
  if (bf16_matmul_supported(&why)) {
    {
      MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
      CHECK(get_matmul_precision() == MatmulPrecision::kBFloat16);
      {
        MatmulPrecisionGuard inner(MatmulPrecision::kHighest);
        CHECK(get_matmul_precision() == MatmulPrecision::kHighest);
      }
      CHECK(get_matmul_precision() == MatmulPrecision::kBFloat16);
    }
    CHECK(get_matmul_precision() == MatmulPrecision::kHighest);
    CHECK_THAT(describe_gemm_paths(), Catch::Contains("bf16 GEMMs on oneDNN"));
  } else {
    CHECK(!why.empty());
    CHECK_THROWS_WITH(set_matmul_precision(MatmulPrecision::kBFloat16),
                      "set_matmul_precision: bf16 matmuls cannot run here: " + why);
    CHECK(get_matmul_precision() == MatmulPrecision::kHighest);
  }
}

TEST_CASE("bf16 matmul equals the float64 product of bf16-rounded operands, to float32 accumulation",
          "[matmul_precision]") {
  if (!bf16_available()) return;
  const Tensor a = randn32({300, 200}, 1), b = randn32({200, 170}, 2);
  Tensor c, c_t, batched;
  {
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    c = matmul(a, b);
    c_t = matmul(a.t().contiguous().t(), b.t().contiguous().t());  // both operands stored transposed
  }
  require_bf16_product(c, reference_of_bf16(a, b), 200);
  // The operands really were rounded (never silently float32): the error against the exact product
  // is bf16-sized, thousands of times the float32 one.
  CHECK(relative_error_vs_exact(c, a, b) > 1e-4);
  CHECK(relative_error_vs_exact(matmul(a, b), a, b) < 1e-6);

  require_bf16_product(c_t, reference_of_bf16(a, b), 200);

  // Batched with broadcasting: [3, 40, 64] @ [64, 50].
  const Tensor x = randn32({3, 40, 64}, 3), w = randn32({64, 50}, 4);
  {
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    batched = matmul(x, w);
  }
  require_bf16_product(batched, reference_of_bf16(x, w.expand({3, 64, 50})), 64);
}

TEST_CASE("bf16 gemm and gemm_serial honour alpha, beta, transposes and K = 0", "[matmul_precision]") {
  if (!bf16_available()) return;
  const int64_t M = 70, N = 90, K = 130;
  const Tensor at = randn32({K, M}, 5), b = randn32({K, N}, 6), c0 = randn32({M, N}, 7);
  Tensor c1 = c0.clone(), c2 = c0.clone(), empty = c0.clone();
  {
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    gemm<float>(true, false, M, N, K, 0.5f, at.data<float>(), M, b.data<float>(), N, 1.0f, c1.data<float>(), N);
    gemm_serial<float>(true, false, M, N, K, 0.5f, at.data<float>(), M, b.data<float>(), N, 1.0f, c2.data<float>(), N);
    gemm<float>(false, false, M, N, 0, 1.0f, nullptr, 1, nullptr, N, 2.0f, empty.data<float>(), N);
  }
  // Reference: c0 + 0.5 * at^T b, with the product's operands rounded to bf16 (c0 is not rounded).
  Reference ref = reference_of_bf16(at.t(), b);
  const std::vector<double> base = c0.to(kFloat64).to_vector<double>();
  for (size_t i = 0; i < base.size(); ++i) {
    ref.product[i] = base[i] + 0.5 * ref.product[i];
    ref.magnitude[i] = std::abs(base[i]) + 0.5 * ref.magnitude[i];
  }
  require_bf16_product(c1, ref, K + 1);
  CHECK(c1.to_vector<float>() == c2.to_vector<float>());  // the same kernel, split or not
  require_close(empty, (c0 * 2.0).to(kFloat64).to_vector<double>(), 0);
}

TEST_CASE("linear's forward and both backward products run at bf16 precision", "[matmul_precision]") {
  if (!bf16_available()) return;
  const Tensor x = randn32({64, 96}, 8).requires_grad_(), w = randn32({80, 96}, 9).requires_grad_();
  const Tensor g = randn32({64, 80}, 10);
  Tensor y;
  {
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    y = linear(x, w);
    y.backward(g);
  }
  require_bf16_product(y, reference_of_bf16(x, w.t()), 96);
  require_bf16_product(x.grad(), reference_of_bf16(g, w), 80);
  require_bf16_product(w.grad(), reference_of_bf16(g.t(), x), 64);
}

TEST_CASE("float64 matmuls do not change under bf16 precision", "[matmul_precision]") {
  if (!bf16_available()) return;
  const Tensor a = randn64({50, 60}, 11), b = randn64({60, 70}, 12);
  const std::vector<double> highest = matmul(a, b).to_vector<double>();
  MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
  CHECK(matmul(a, b).to_vector<double>() == highest);
}

TEST_CASE("bf16 matmuls are bitwise equal at 1 and 2 threads, and repeatable", "[matmul_precision]") {
  if (!bf16_available()) return;
  // Large enough to be cut into blocks across the pool (and batched entries run as tasks).
  const Tensor a = randn32({1000, 256}, 13), b = randn32({256, 384}, 14);
  const Tensor x = randn32({6, 128, 64}, 15), y = randn32({6, 64, 96}, 16);
  const int before = get_num_threads();
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2, 2, 1}) {
    set_num_threads(threads);
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    std::vector<float> out = matmul(a, b).to_vector<float>();
    const std::vector<float> batched = matmul(x, y).to_vector<float>();
    out.insert(out.end(), batched.begin(), batched.end());
    runs.push_back(std::move(out));
  }
  set_num_threads(before);
  for (size_t r = 1; r < runs.size(); ++r) CHECK(runs[r] == runs[0]);
}

TEST_CASE("bf16_weight rounds a weight once per version, shares it between views, and forgets dead weights",
          "[matmul_precision][bf16_weights]") {
  if (!bf16_available()) return;
  Tensor w = randn32({64, 48}, 21).requires_grad_();
  const Tensor x = randn32({32, 48}, 22).requires_grad_(), g = randn32({32, 64}, 23);
  const std::vector<float> expected = w.detach().to(kBFloat16).to_vector<float>();
  const int64_t before = bf16_weight_stats().roundings;
  {
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    const Tensor y = linear(x, w);
    y.backward(g);  // dx = g W reads the forward's copy
  }
  CHECK(bf16_weight_stats().roundings == before + 1);
  const Tensor copy = bf16_weight(w.detach());
  CHECK(bf16_weight_stats().roundings == before + 1);  // same version: no new rounding
  CHECK(copy.dtype() == kBFloat16);
  CHECK(copy.to_vector<float>() == expected);
  // A view of the same storage (a transpose, a row slice) reads the same copy.
  CHECK(bf16_weight(w.detach().t()).to_vector<float>() == w.detach().t().contiguous().to(kBFloat16).to_vector<float>());
  CHECK(bf16_weight(w.detach().narrow(0, 10, 5)).to_vector<float>() ==
        w.detach().narrow(0, 10, 5).contiguous().to(kBFloat16).to_vector<float>());
  CHECK(bf16_weight_stats().roundings == before + 1);

  // An in-place update (as an optimizer step makes, bumping the version) is seen: the next product
  // uses the new values, bit for bit as a fresh tensor holding them would.
  const Tensor fresh = randn32({64, 48}, 24);
  {
    NoGradGuard no_grad;
    w.detach().copy_(fresh);
  }
  std::vector<float> updated, reference;
  {
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    NoGradGuard no_grad;
    updated = linear(x, w).to_vector<float>();
    reference = linear(x, fresh.clone()).to_vector<float>();
  }
  CHECK(bf16_weight_stats().roundings >= before + 2);
  CHECK(updated == reference);
  CHECK(bf16_weight(w.detach()).to_vector<float>() == fresh.to(kBFloat16).to_vector<float>());

  // The copy of a weight that no longer exists is dropped when a weight not seen before comes.
  const Tensor other = randn32({8, 8}, 25);
  bf16_weight(other);  // new: the copies of weights dead by now (fresh.clone()'s above) go
  const int64_t copies = bf16_weight_stats().copies;  // w's and other's among them
  w = Tensor();
  CHECK(bf16_weight_stats().copies == copies);  // held until then
  bf16_weight(other);
  CHECK(bf16_weight_stats().copies == copies);  // a weight seen before does not drop it
  {
    const Tensor third = randn32({8, 8}, 27);
    bf16_weight(third);
    CHECK(bf16_weight_stats().copies == copies);  // w's copy went, third's came
  }
  CHECK_THROWS_WITH(bf16_weight(randn64({2, 2}, 26)), "bf16_weight: expected a float32 tensor, got float64");
}

TEST_CASE("a bf16 matmul operand given already rounded, transposed or not, gives the bits of rounding it on the fly",
          "[matmul_precision]") {
  if (!bf16_available()) return;
  const Tensor a = randn32({70, 90}, 31), b = randn32({90, 50}, 32);
  MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
  const std::vector<float> on_the_fly = matmul_kernel(a, b).to_vector<float>();
  CHECK(matmul_kernel(a.to(kBFloat16), b).to_vector<float>() == on_the_fly);
  CHECK(matmul_kernel(a, to_bf16_operand(b)).to_vector<float>() == on_the_fly);
  // Transposed storage: rounded in its own layout; the same values as the plain product, to float32
  // accumulation (the kernel may sum in another order for the other layout).
  const Tensor at = a.t().contiguous().t(), rounded_at = to_bf16_operand(at);
  CHECK(rounded_at.strides() == at.strides());
  require_bf16_product(matmul_kernel(rounded_at, b), reference_of_bf16(a, b), 90);
}

TEST_CASE("under bf16 a norm rounds its output as it writes it, and the copy goes stale with an in-place write",
          "[matmul_precision]") {
  const Tensor x = randn32({6, 40}, 41), w = randn32({40}, 42);
  CHECK_FALSE(rounded_view(rms_norm(x, w, 1e-6)).defined());  // kHighest: nothing is rounded
  if (!bf16_available()) return;
  MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
  Tensor y = rms_norm(x, w, 1e-6);
  const Tensor copy = rounded_view(y);
  REQUIRE(copy.defined());
  CHECK(copy.to_vector<float>() == y.to(kBFloat16).to_vector<float>());  // the bits of rounding y
  CHECK(to_bf16_operand(y).storage() == copy.storage());  // what a linear layer reads: not rounded again
  const Tensor columns = narrow(y.t(), 0, 3, 2);  // any view of y reads the copy in its own layout
  CHECK(rounded_view(columns).to_vector<float>() == columns.to(kBFloat16).to_vector<float>());
  CHECK(linear(y, x, Tensor()).to_vector<float>() == linear(y.to(kFloat64).to(kFloat32), x, Tensor()).to_vector<float>());
  y.fill_(0.5);  // an in-place write bumps the version: the copy is stale, y is rounded afresh
  CHECK_FALSE(rounded_view(y).defined());
  CHECK(to_bf16_operand(y).to_vector<float>() == std::vector<float>(240, 0.5f));
  // Nothing to attach to: float64, or a view that does not span its storage.
  CHECK(rounded_copy(randn64({4, 4}, 43)) == nullptr);
  CHECK(rounded_copy(narrow(randn32({4, 4}, 44), 0, 1, 2)) == nullptr);
  MatmulPrecisionGuard highest(MatmulPrecision::kHighest);  // nor at another precision
  CHECK(rounded_copy(randn32({4, 4}, 45)) == nullptr);
}

// oneDNN runs on its own OpenMP runtime; each pool thread sets its team to one (core/gemm_bf16.cpp).
// Were it not, every bf16 GEMM called from a pool task would start an OpenMP team of one thread per
// core: new threads beside the pool, two pools fighting for the cores.
TEST_CASE("bf16 GEMMs start no threads beside the pool", "[matmul_precision][threads]") {
  if (!bf16_available()) return;
  if (std::thread::hardware_concurrency() < 2) {
    WARN("one core: an OpenMP team would have one thread anyway, nothing to check");
    return;
  }
  auto threads_of_process = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/task"), std::filesystem::directory_iterator{});
  };
  const int before = get_num_threads();
  set_num_threads(2);
  const Tensor a = randn32({1024, 256}, 41), b = randn32({256, 512}, 42);
  matmul(a, b);  // float32 first: the pool's threads exist from here on
  const auto pool_only = threads_of_process();
  {
    MatmulPrecisionGuard guard(MatmulPrecision::kBFloat16);
    for (int i = 0; i < 4; ++i) matmul(a, b);  // split into blocks that run on both pool threads
  }
  CHECK(threads_of_process() == pool_only);
  set_num_threads(before);
}

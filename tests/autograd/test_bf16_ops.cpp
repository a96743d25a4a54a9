// The differentiable ops under MatmulPrecision::kBFloat16: a backward runs at the precision of its
// forward (whatever the precision when backward() is called), the fused MoE experts op agrees with
// the same experts composed from matmuls at bf16 in its output and every gradient, the fused
// attention's output and gradients move by a bf16-sized amount from float32, and float64 never changes.
#include <cmath>
#include <cstring>

#include "../helpers.hpp"
#include "core/gemm.hpp"

using namespace latent;
using latent::testing::bf16_available;

namespace {

Tensor randn32(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Generator gen(seed);
  return (randn(shape, kFloat32, &gen) * scale).detach().requires_grad_();
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return ca.dtype() == cb.dtype() && ca.shape() == cb.shape() &&
         std::memcmp(ca.raw_data(), cb.raw_data(), static_cast<size_t>(ca.numel()) * dtype_size(ca.dtype())) == 0;
}

// max |a - b| / max |b|.
double distance(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const std::vector<double> x = a.to(kFloat64).to_vector<double>(), y = b.to(kFloat64).to_vector<double>();
  double worst = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i])), scale = std::max(scale, std::abs(y[i]));
  return worst / scale;
}

// The leaves' gradients after backward(sum(out * seed)); `out` comes from fn(leaves).
std::vector<Tensor> gradients(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                              const std::vector<Tensor>& leaves, const Tensor& seed, Tensor* out = nullptr) {
  for (const Tensor& t : leaves) t.set_grad(Tensor());
  const Tensor y = fn(leaves);
  y.backward(seed.to(y.dtype()));
  if (out) *out = y.detach();
  std::vector<Tensor> grads;
  for (const Tensor& t : leaves) grads.push_back(t.grad());
  return grads;
}

std::vector<Tensor> as_f64(const std::vector<Tensor>& leaves) {
  std::vector<Tensor> out;
  for (const Tensor& t : leaves) out.push_back(t.detach().to(kFloat64).requires_grad_());
  return out;
}

}  // namespace

TEST_CASE("a backward runs at the matmul precision of its forward", "[bf16][engine]") {
  if (!bf16_available()) return;
  const Tensor x = randn32({40, 64}, 1), w = randn32({48, 64}, 2), g = randn32({40, 48}, 3);
  auto run = [&](MatmulPrecision forward_at, MatmulPrecision backward_at) {
    x.set_grad(Tensor()), w.set_grad(Tensor());
    Tensor y;
    {
      MatmulPrecisionGuard at(forward_at);
      y = linear(x, w);
    }
    MatmulPrecisionGuard at(backward_at);
    y.backward(g);
    return std::pair{x.grad(), w.grad()};
  };
  const auto fp32 = run(MatmulPrecision::kHighest, MatmulPrecision::kHighest);
  const auto bf16 = run(MatmulPrecision::kBFloat16, MatmulPrecision::kBFloat16);
  REQUIRE(distance(bf16.first, fp32.first) > 1e-4);  // the two really differ
  REQUIRE(distance(bf16.second, fp32.second) > 1e-4);
  // The MoE router's case: a float32 forward inside a bf16 step keeps float32 gradients ...
  const auto router = run(MatmulPrecision::kHighest, MatmulPrecision::kBFloat16);
  CHECK(bitwise_equal(router.first, fp32.first));
  CHECK(bitwise_equal(router.second, fp32.second));
  // ... and a bf16 forward keeps bf16 gradients when backward() is called after the scope ended.
  const auto late = run(MatmulPrecision::kBFloat16, MatmulPrecision::kHighest);
  CHECK(bitwise_equal(late.first, bf16.first));
  CHECK(bitwise_equal(late.second, bf16.second));
  CHECK(get_matmul_precision() == MatmulPrecision::kHighest);
}

TEST_CASE("moe_experts at bf16 equals the experts composed from bf16 matmuls, output and gradients",
          "[bf16][moe_experts]") {
  if (!bf16_available()) return;
  constexpr int64_t N = 48, D = 64, I = 32, E = 4, K = 2;
  // Gate weights are powers of two: scaling by them commutes with bf16 rounding, so the fused op
  // (which scales after its down GEMM, and scales dh' after the dy Wd GEMM) and the composed one
  // (which scales dy before the matmul backward) round the very same operands.
  std::vector<float> w_values;
  std::vector<int64_t> ids;
  for (int64_t n = 0; n < N; ++n) {
    w_values.insert(w_values.end(), {n % 3 == 0 ? 0.5f : 1.0f, n % 2 == 0 ? 0.25f : 2.0f});
    ids.insert(ids.end(), {n % E, (n % E + 1 + (n / E) % (E - 1)) % E});  // two different experts
  }
  const Tensor x = randn32({N, D}, 10), w = from_vector(w_values, {N, K}).requires_grad_();
  const Tensor expert_ids = from_vector(ids, {N, K});
  std::vector<Tensor> leaves = {x, w};
  for (int64_t e = 0; e < E; ++e)
    for (int64_t j = 0; j < 3; ++j)
      leaves.push_back(randn32(j < 2 ? Shape{I, D} : Shape{D, I}, 20 + uint64_t(3 * e + j), 0.2));
  const Tensor seed = randn32({N, D}, 99).detach();

  auto experts_of = [](const std::vector<Tensor>& in) {
    std::vector<ExpertWeights> experts;
    for (int64_t e = 0; e < E; ++e) experts.push_back({in[size_t(2 + 3 * e)], in[size_t(3 + 3 * e)], in[size_t(4 + 3 * e)], ""});
    return experts;
  };
  auto fused = [&](const std::vector<Tensor>& in) { return moe_experts(in[0], in[1], expert_ids, experts_of(in)); };
  auto composed = [&](const std::vector<Tensor>& in) {
    const std::vector<int64_t> id = expert_ids.to_vector<int64_t>();
    Tensor y = zeros({N, D}, in[0].dtype());
    for (int64_t e = 0; e < E; ++e) {
      const ExpertWeights ew = experts_of(in)[size_t(e)];
      const Tensor g = matmul(in[0], transpose(ew.gate_proj, 0, 1)), u = matmul(in[0], transpose(ew.up_proj, 0, 1));
      const Tensor out = matmul(silu(g) * u, transpose(ew.down_proj, 0, 1));
      for (int64_t k = 0; k < K; ++k) {
        std::vector<double> picked(size_t(N), 0.0);
        for (int64_t n = 0; n < N; ++n) picked[size_t(n)] = id[size_t(n * K + k)] == e ? 1.0 : 0.0;
        y = y + unsqueeze(narrow(in[1], 1, k, 1).squeeze(1) * from_vector(picked).to(in[0].dtype()), 1) * out;
      }
    }
    return y;
  };

  Tensor y_fused, y_composed, y_fp32, y_f64;
  std::vector<Tensor> g_fused, g_composed;
  {
    MatmulPrecisionGuard at(MatmulPrecision::kBFloat16);
    g_fused = gradients(fused, leaves, seed, &y_fused);
    g_composed = gradients(composed, leaves, seed, &y_composed);
  }
  const std::vector<Tensor> g_fp32 = gradients(fused, leaves, seed, &y_fp32);
  const std::vector<Tensor> g_f64 = gradients(fused, as_f64(leaves), seed, &y_f64);
  {
    MatmulPrecisionGuard at(MatmulPrecision::kBFloat16);  // float64 ignores the setting
    Tensor y_f64_bf16;
    const std::vector<Tensor> g = gradients(fused, as_f64(leaves), seed, &y_f64_bf16);
    CHECK(bitwise_equal(y_f64_bf16, y_f64));
    for (size_t i = 0; i < g.size(); ++i) CHECK(bitwise_equal(g[i], g_f64[i]));
  }

  // Measured here: fused vs composed at bf16 within 2e-7 for most results (float32 accumulation
  // order), 4.2e-5 at worst where h = silu(g) * u, computed by two different float32 routines, lands
  // on the other side of a bf16 rounding boundary; bf16 vs float32 2.9e-3 to 5.8e-3; float32 vs
  // float64 below 1e-6. A product left in float32 would put its result a bf16 distance (~3e-3) away
  // from the composed one.
  auto check = [&](const std::string& what, const Tensor& bf16, const Tensor& composed_bf16, const Tensor& fp32,
                   const Tensor& f64) {
    const double to_composed = composed_bf16.defined() ? distance(bf16, composed_bf16) : 0.0;
    const double to_fp32 = distance(bf16, fp32), fp32_to_f64 = distance(fp32, f64);
    INFO(what << ": bf16 to composed bf16 " << to_composed << ", bf16 to fp32 " << to_fp32 << ", fp32 to f64 " << fp32_to_f64);
    CHECK(to_fp32 > 3e-4);
    CHECK(to_fp32 < 3e-2);
    CHECK(fp32_to_f64 < 1e-5);
    CHECK(to_composed < 2e-4);
  };
  check("output", y_fused, y_composed, y_fp32, y_f64);
  check("dx", g_fused[0], g_composed[0], g_fp32[0], g_f64[0]);
  // dw is a dot product of dh' = dy Wd with h in the fused op, of dy with h Wd^T in the composed one:
  // equal in exact arithmetic, rounded at different places in bf16. Only the bf16 distance is checked.
  check("dw", g_fused[1], Tensor(), g_fp32[1], g_f64[1]);
  for (size_t i = 2; i < leaves.size(); ++i)
    check("expert " + std::to_string((i - 2) / 3) + " " + (i % 3 == 2 ? "gate_proj" : i % 3 == 0 ? "up_proj" : "down_proj"),
          g_fused[i], g_composed[i], g_fp32[i], g_f64[i]);
}

TEST_CASE("fused attention at bf16: output and the q, k, v gradients move by a bf16 distance; float64 does not",
          "[bf16][attention]") {
  if (!bf16_available()) return;
  // Longer than one tile of keys, grouped-query heads, Dv != Dqk.
  const std::vector<Tensor> leaves = {randn32({2, 4, 150, 48}, 1), randn32({2, 2, 150, 48}, 2), randn32({2, 2, 150, 32}, 3)};
  const Tensor seed = randn32({2, 4, 150, 32}, 4).detach();
  auto attention = [](const std::vector<Tensor>& in) { return scaled_dot_product_attention(in[0], in[1], in[2]); };
  Tensor y_bf16, y_fp32, y_f64, y_f64_bf16;
  std::vector<Tensor> g_bf16, g_f64_bf16;
  {
    MatmulPrecisionGuard at(MatmulPrecision::kBFloat16);
    g_bf16 = gradients(attention, leaves, seed, &y_bf16);
    g_f64_bf16 = gradients(attention, as_f64(leaves), seed, &y_f64_bf16);
  }
  const std::vector<Tensor> g_fp32 = gradients(attention, leaves, seed, &y_fp32);
  const std::vector<Tensor> g_f64 = gradients(attention, as_f64(leaves), seed, &y_f64);
  CHECK(bitwise_equal(y_f64_bf16, y_f64));
  const char* names[] = {"output", "dq", "dk", "dv"};
  const std::vector<Tensor> bf16 = {y_bf16, g_bf16[0], g_bf16[1], g_bf16[2]}, fp32 = {y_fp32, g_fp32[0], g_fp32[1], g_fp32[2]},
                            f64 = {y_f64, g_f64[0], g_f64[1], g_f64[2]}, f64_bf16 = {y_f64_bf16, g_f64_bf16[0], g_f64_bf16[1], g_f64_bf16[2]};
  for (size_t i = 0; i < 4; ++i) {
    const double to_fp32 = distance(bf16[i], fp32[i]), fp32_to_f64 = distance(fp32[i], f64[i]);
    INFO(names[i] << ": bf16 to fp32 " << to_fp32 << ", fp32 to f64 " << fp32_to_f64);
    CHECK(to_fp32 > 3e-4);
    CHECK(to_fp32 < 3e-2);
    CHECK(fp32_to_f64 < 1e-5);
    CHECK(bitwise_equal(f64_bf16[i], f64[i]));
  }
}

// Ops whose float32 outputs bf16 GEMMs read round them as they write them (core/gemm.hpp,
// rounded_copy): the copy must hold the bits of rounding the output, or every product after them
// would read other operands than at float32 precision rounded.
TEST_CASE("under bf16, mla_heads' heads and gradients and attention's output come with their rounded copies",
          "[bf16][attention]") {
  const auto holds_its_rounding = [](const Tensor& t) {
    const Tensor copy = rounded_view(t);
    return copy.defined() && bitwise_equal(copy, t.to(kBFloat16));
  };
  const int64_t B = 2, L = 70, H = 3, nope = 8, rope = 4, V = 6;
  std::vector<float> c, s;
  for (int64_t p = 0; p < L; ++p)
    for (int64_t i = 0; i < rope / 2; ++i) c.push_back(std::cos(0.3f * p * (i + 1))), s.push_back(std::sin(0.3f * p * (i + 1)));
  const Tensor cos = from_vector(c, {L, rope / 2}), sin = from_vector(s, {L, rope / 2});
  const Tensor q = randn32({B, L, H, nope + rope}, 51), kv = randn32({B, L, H, nope + V}, 52), k_pe = randn32({B, L, rope}, 53);
  const MlaHeads fp32 = mla_heads(q, kv, k_pe, cos, sin, nope);
  CHECK_FALSE(rounded_view(fp32.query).defined());  // kHighest: nothing is rounded
  if (!bf16_available()) return;
  MatmulPrecisionGuard at(MatmulPrecision::kBFloat16);
  const MlaHeads heads = mla_heads(q, kv, k_pe, cos, sin, nope);
  CHECK(holds_its_rounding(heads.query));
  CHECK(holds_its_rounding(heads.key));
  // v is a slice of each row of kv: rounded with the gaps closed, in its own order of dims.
  const Tensor v_heads = permute(heads.value, {0, 2, 1, 3}), v_rounded = to_bf16_operand(v_heads);
  CHECK(v_rounded.storage()->nbytes() == static_cast<size_t>(v_heads.numel()) * sizeof(bfloat16));
  CHECK(bitwise_equal(v_rounded, v_heads.to(kBFloat16)));
  const Tensor out = scaled_dot_product_attention(permute(heads.query, {0, 2, 1, 3}), permute(heads.key, {0, 2, 1, 3}),
                                                  v_heads, true, 0.0);
  CHECK(holds_its_rounding(out));
  // Backward: the gradients of q and kv are what the q and kv projections' backward products read.
  mla_heads(q, kv, k_pe, cos, sin, nope).query.backward(randn32({B, L, H, nope + rope}, 54).detach());
  CHECK(holds_its_rounding(q.grad()));
  // A second backward sums into q's gradient in place (autograd/node.cpp, add_in_place): the copy goes
  // stale, and a product then rounds the sum, not the first gradient.
  mla_heads(q, kv, k_pe, cos, sin, nope).query.backward(randn32({B, L, H, nope + rope}, 56).detach());
  CHECK_FALSE(rounded_view(q.grad()).defined());
  CHECK(bitwise_equal(to_bf16_operand(q.grad()), q.grad().to(kBFloat16)));
  kv.set_grad(Tensor());
  mla_heads(q, kv, k_pe, cos, sin, nope).value.backward(randn32({B, L, H, V}, 55).detach());
  CHECK(holds_its_rounding(kv.grad()));
}

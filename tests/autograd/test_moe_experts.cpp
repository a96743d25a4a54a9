// The moe_experts op: agreement with the experts composed from primitive ops (values and every
// gradient), f64 gradchecks, an expert no token picks, a single token, thread-count determinism,
// anomaly mode naming the expert, what it keeps for its backward, and errors.
#include <limits>

#include "composed.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

constexpr int64_t kD = 4, kI = 3, kShared = 5;

// Experts 0..E-1 of width kI, weights drawn from `seed`; f64 leaves.
std::vector<ExpertWeights> make_experts(int64_t E, uint64_t seed) {
  std::vector<ExpertWeights> experts;
  for (int64_t e = 0; e < E; ++e) {
    const uint64_t s = seed + 3 * static_cast<uint64_t>(e);
    experts.push_back({randn64({kI, kD}, s), randn64({kI, kD}, s + 1), randn64({kD, kI}, s + 2), ""});
  }
  return experts;
}

// One SwiGLU expert from primitive ops.
Tensor expert_composed(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down) {
  const Tensor g = matmul(x, transpose(gate, 0, 1)), u = matmul(x, transpose(up, 0, 1));
  return matmul(g * sigmoid(g) * u, transpose(down, 0, 1));
}

// y = shared(x) + sum_k w[:, k] * [ids[:, k] == e] * expert_e(x), every expert over every token.
Tensor moe_composed(const Tensor& x, const Tensor& w, const std::vector<int64_t>& ids, int64_t K,
                    const std::vector<ExpertWeights>& experts, const ExpertWeights& shared) {
  const int64_t N = x.size(0);
  Tensor y = shared.gate_proj.defined() ? expert_composed(x, shared.gate_proj, shared.up_proj, shared.down_proj)
                                        : zeros({N, kD}, kFloat64);
  for (size_t e = 0; e < experts.size(); ++e) {
    const Tensor out = expert_composed(x, experts[e].gate_proj, experts[e].up_proj, experts[e].down_proj);
    for (int64_t k = 0; k < K; ++k) {
      std::vector<double> picked(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) picked[static_cast<size_t>(n)] = ids[static_cast<size_t>(n * K + k)] == static_cast<int64_t>(e);
      y = y + unsqueeze(narrow(w, 1, k, 1).squeeze(1) * from_vector(picked), 1) * out;
    }
  }
  return y;
}

// The op's inputs as one list for evaluate/gradcheck: x, w, then gate/up/down of each expert, then
// of the shared expert (when given).
std::vector<Tensor> flatten(const Tensor& x, const Tensor& w, const std::vector<ExpertWeights>& experts,
                            const ExpertWeights& shared) {
  std::vector<Tensor> all = {x, w};
  for (const ExpertWeights& e : experts) all.insert(all.end(), {e.gate_proj, e.up_proj, e.down_proj});
  if (shared.gate_proj.defined()) all.insert(all.end(), {shared.gate_proj, shared.up_proj, shared.down_proj});
  return all;
}

// Back from the list: E experts and, if the list is longer, the shared expert.
std::pair<std::vector<ExpertWeights>, ExpertWeights> unflatten(const std::vector<Tensor>& in, int64_t E) {
  std::vector<ExpertWeights> experts;
  for (int64_t e = 0; e < E; ++e) experts.push_back({in[2 + 3 * e], in[3 + 3 * e], in[4 + 3 * e], ""});
  ExpertWeights shared;
  if (static_cast<int64_t>(in.size()) > 2 + 3 * E) shared = {in[2 + 3 * E], in[3 + 3 * E], in[4 + 3 * E], ""};
  return {experts, shared};
}

struct Case {
  int64_t N, K, E;
  std::vector<int64_t> ids;
  bool shared;
};

void require_same_as_composed(const Case& c, uint64_t seed) {
  const Tensor ids = from_vector(c.ids, {c.N, c.K});
  const ExpertWeights shared =
      c.shared ? ExpertWeights{randn64({kShared, kD}, seed + 100), randn64({kShared, kD}, seed + 101), randn64({kD, kShared}, seed + 102), ""}
               : ExpertWeights{};
  const std::vector<Tensor> inputs = flatten(randn64({c.N, kD}, seed), randn64({c.N, c.K}, seed + 1), make_experts(c.E, seed + 2), shared);
  testing::require_same_as_composed(
      [&](const std::vector<Tensor>& in) {
        const auto [experts, sh] = unflatten(in, c.E);
        return moe_experts(in[0], in[1], ids, experts, sh);
      },
      [&](const std::vector<Tensor>& in) {
        const auto [experts, sh] = unflatten(in, c.E);
        return moe_composed(in[0], in[1], c.ids, c.K, experts, sh);
      },
      inputs, 1e-12);
  CHECK(autograd::gradcheck(
      [&](const std::vector<Tensor>& in) {
        const auto [experts, sh] = unflatten(in, c.E);
        return moe_experts(in[0], in[1], ids, experts, sh);
      },
      inputs));
}

}  // namespace

TEST_CASE("moe_experts equals the experts composed from primitive ops and passes gradcheck in f64", "[moe_experts]") {
  SECTION("shared expert, an idle expert (3) and one with a single token (2)") {
    require_same_as_composed({5, 2, 4, {0, 1, 1, 0, 2, 1, 0, 1, 1, 0}, true}, 1);
  }
  SECTION("no shared expert, top-3, a token picking one expert twice") {
    require_same_as_composed({4, 3, 3, {0, 1, 2, 2, 2, 1, 1, 0, 2, 0, 0, 0}, false}, 20);
  }
  SECTION("a single token") { require_same_as_composed({1, 2, 3, {2, 0}, true}, 40); }
}

TEST_CASE("moe_experts: an expert no token picks is never read and gets no gradient", "[moe_experts]") {
  std::vector<ExpertWeights> experts = make_experts(3, 7);
  for (Tensor* t : {&experts[1].gate_proj, &experts[1].up_proj, &experts[1].down_proj})
    t->detach().fill_(std::numeric_limits<double>::quiet_NaN());
  const Tensor x = randn64({3, kD}, 8), w = randn64({3, 1}, 9);
  const Tensor y = moe_experts(x, w, from_vector<int64_t>({0, 2, 0}, {3, 1}), experts);
  REQUIRE(std::isfinite(sum(y).item()));
  sum(y).backward();
  CHECK_FALSE(experts[1].gate_proj.grad().defined());
  CHECK_FALSE(experts[1].down_proj.grad().defined());
  CHECK(experts[0].down_proj.grad().defined());
  // Only the idle expert's weights changed the NaN-free expert outputs not at all: compare with E = 2.
  const std::vector<ExpertWeights> two = {experts[0], experts[2]};
  require_close(y, moe_experts(x, w, from_vector<int64_t>({0, 1, 0}, {3, 1}), two), 0);
}

TEST_CASE("moe_experts gives bitwise identical results for any thread count", "[moe_experts]") {
  Generator gen(3);
  const int64_t N = 64, K = 2, E = 6;
  const Tensor x = randn({N, kD}, kFloat32, &gen).requires_grad_(), w = randn({N, K}, kFloat32, &gen);
  const Tensor ids = randint(0, E, {N, K}, &gen);
  std::vector<ExpertWeights> experts;
  for (int64_t e = 0; e < E; ++e)
    experts.push_back({randn({kI, kD}, kFloat32, &gen).requires_grad_(), randn({kI, kD}, kFloat32, &gen).requires_grad_(),
                       randn({kD, kI}, kFloat32, &gen).requires_grad_(), ""});
  auto run = [&](int threads) {
    set_num_threads(threads);
    x.set_grad(Tensor());
    const Tensor y = moe_experts(x, w, ids, experts);
    sum(y * y).backward();
    return std::pair{y.to_vector<float>(), x.grad().to_vector<float>()};
  };
  const int before = get_num_threads();
  const auto one = run(1), two = run(2);
  set_num_threads(before);
  CHECK(one.first == two.first);
  CHECK(one.second == two.second);
}

TEST_CASE("moe_experts in anomaly mode names the expert and projection that made a NaN or Inf", "[moe_experts][anomaly]") {
  std::vector<ExpertWeights> experts = make_experts(3, 30);
  experts[2].label = "layer.experts.2";
  const Tensor x = randn64({4, kD}, 31), w = randn64({4, 1}, 32);
  const Tensor ids = from_vector<int64_t>({0, 2, 2, 1}, {4, 1});
  autograd::DetectAnomalyGuard anomaly;
  SECTION("forward: a NaN weight in a labelled expert's down projection") {
    experts[2].down_proj.detach().fill_(std::numeric_limits<double>::quiet_NaN());
    CHECK_THROWS_WITH(moe_experts(x, w, ids, experts),
                      "anomaly: forward of 'moe_experts' produced NaN in the down_proj output of expert 2 [2, 4] (8 of 8 "
                      "values, first at [0, 0]); the down_proj weight of expert 2 [4, 3] already held NaN; it ran in "
                      "module layer.experts.2.down_proj");
  }
  SECTION("forward: an unlabelled expert is named by its index and the caller's module") {
    experts[1].gate_proj.detach().fill_(std::numeric_limits<double>::infinity());
    autograd::ModuleLabelScope caller("layer");
    CHECK_THROWS_WITH(moe_experts(x, w, ids, experts),
                      Catch::StartsWith("anomaly: forward of 'moe_experts' produced ") &&
                          Catch::Contains("in the gate_proj output of expert 1 [1, 3]") &&
                          Catch::EndsWith("; it ran in module layer"));
  }
  SECTION("backward: a gradient that overflows inside one expert") {
    // All weights 1 except tiny down weights: g = u = 4 * 50 = 200 and h = silu(200) * 200 ~ 4e4, so the
    // forward stays finite, but with dy = 1e307 every element of dWd = dy^T h overflows, first in
    // expert 0 (dispatch order), while dh = dy Wd (~4e207) does not.
    for (ExpertWeights& e : experts) {
      e.gate_proj.detach().fill_(1), e.up_proj.detach().fill_(1), e.down_proj.detach().fill_(1e-100);
    }
    const Tensor y = [&] {
      autograd::ModuleLabelScope caller("layer");
      return moe_experts(full({4, kD}, 50.0, kFloat64), ones({4, 1}, kFloat64), ids, experts);
    }();
    REQUIRE(std::isfinite(sum(y * 1e307).item()));
    CHECK_THROWS_WITH(sum(y * 1e307).backward(),
                      "anomaly: backward of 'moe_experts' produced Inf in the gradient of the down_proj weight of "
                      "expert 0 [4, 3] (12 of 12 values, first at [0, 0]); forward ran in module layer");
  }
}

TEST_CASE("moe_experts refuses bad shapes, dtypes and expert ids, naming them", "[moe_experts]") {
  const std::vector<ExpertWeights> experts = make_experts(2, 50);
  const Tensor x = zeros({3, kD}, kFloat64), w = zeros({3, 2}, kFloat64);
  const Tensor ids = from_vector<int64_t>({0, 1, 1, 0, 0, 1}, {3, 2});
  CHECK_THROWS_WITH(moe_experts(zeros({3, kD}, kInt64), w, ids, experts),
                    "moe_experts: x must be a floating-point [N, D] tensor with D > 0, got int64 [3, 4]");
  CHECK_THROWS_WITH(moe_experts(zeros({1, 3, kD}, kFloat64), w, ids, experts), Catch::Contains("[N, D] tensor with D > 0, got float64 [1, 3, 4]"));
  CHECK_THROWS_WITH(moe_experts(x, w, zeros({3, 2}, kFloat64), experts),
                    "moe_experts: expert_ids must be Int64 [N, K] with N = 3, got float64 [3, 2]");
  CHECK_THROWS_WITH(moe_experts(x, zeros({3, 1}, kFloat64), ids, experts),
                    "moe_experts: weights must be float64 [3, 2] like expert_ids, got float64 [3, 1]");
  CHECK_THROWS_WITH(moe_experts(x, w.to(kFloat32), ids, experts), Catch::Contains("got float32 [3, 2]"));
  CHECK_THROWS_WITH(moe_experts(x, w, from_vector<int64_t>({0, 1, 1, 2, 0, 1}, {3, 2}), experts),
                    "moe_experts: expert id 2 at [1, 1] out of range [0, 2)");
  CHECK_THROWS_WITH(moe_experts(x, w, from_vector<int64_t>({0, 1, -1, 0, 0, 1}, {3, 2}), experts),
                    Catch::Contains("expert id -1 at [1, 0]"));
  std::vector<ExpertWeights> bad = experts;
  bad[1].down_proj = zeros({kI, kD}, kFloat64);  // transposed shape
  CHECK_THROWS_WITH(moe_experts(x, w, ids, bad),
                    "moe_experts: expert 1 needs contiguous float64 gate_proj, up_proj [I, 4] and down_proj [4, I] for "
                    "x [3, 4], got float64 [3, 4], [3, 4], [3, 4]");
  bad = experts;
  bad[0].up_proj = bad[0].up_proj.to(kFloat32);
  CHECK_THROWS_WITH(moe_experts(x, w, ids, bad), Catch::StartsWith("moe_experts: expert 0 needs contiguous float64"));
  bad = experts;
  bad[0].gate_proj = transpose(zeros({kD, kI}, kFloat64), 0, 1);
  CHECK_THROWS_WITH(moe_experts(x, w, ids, bad), Catch::StartsWith("moe_experts: expert 0 needs contiguous"));
  CHECK_THROWS_WITH(moe_experts(x, w, ids, experts, ExpertWeights{zeros({2, kD}, kFloat64), Tensor(), zeros({kD, 2}, kFloat64), ""}),
                    Catch::Contains("the shared expert needs") && Catch::Contains("got float64 [2, 4], none, [4, 2]"));
}

TEST_CASE("moe_experts keeps the gathered rows, g and u for its backward, and not h", "[moe_experts][memory]") {
  // Tensor memory held by the op's output and its node, counted in the allocator's size classes: at
  // float32 the gathered input rows [N*K, D], g and u [N*K, I] each, and the output [N, D]. h is
  // computed again by the backward; keeping it would add one more [N*K, I].
  constexpr int64_t N = 64, K = 2, E = 4, D = 32, I = 16;
  auto leaf = [](const Shape& shape, uint64_t seed) { return randn64(shape, seed).detach().to(kFloat32).requires_grad_(); };
  std::vector<ExpertWeights> experts;
  for (int64_t e = 0; e < E; ++e) {
    const uint64_t s = 40 + 3 * static_cast<uint64_t>(e);
    experts.push_back({leaf({I, D}, s), leaf({I, D}, s + 1), leaf({D, I}, s + 2), ""});
  }
  std::vector<int64_t> ids;
  for (int64_t n = 0; n < N; ++n) ids.insert(ids.end(), {n % E, (n + 1) % E});
  const Tensor x = leaf({N, D}, 50), w = leaf({N, K}, 51);
  const Tensor expert_ids = from_vector(ids, {N, K});
  auto bytes = [](int64_t elements) { return static_cast<int64_t>(allocator::size_class(static_cast<size_t>(elements) * 4)); };
  const int64_t before = allocator::stats().bytes_in_use;
  Tensor y = moe_experts(x, w, expert_ids, experts);
  CHECK(allocator::stats().bytes_in_use - before == bytes(N * D) + bytes(N * K * D) + 2 * bytes(N * K * I));
  y.backward(leaf({N, D}, 52).detach());
  y = Tensor();
  // What is left: the gradients of x, w and the experts' matrices.
  CHECK(allocator::stats().bytes_in_use - before == bytes(N * D) + bytes(N * K) + 3 * E * bytes(I * D));

  if (!latent::testing::bf16_available()) return;
  // At bf16 the rows are kept rounded (half the size) and h is not kept in either precision; the
  // experts' bf16 weight copies exist before (made by a first forward) and are not the op's.
  MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
  moe_experts(x, w, expert_ids, experts);
  const int64_t at_bf16 = allocator::stats().bytes_in_use;
  y = moe_experts(x, w, expert_ids, experts);
  CHECK(allocator::stats().bytes_in_use - at_bf16 ==
        bytes(N * D) + static_cast<int64_t>(allocator::size_class(N * K * D * 2)) + 2 * bytes(N * K * I));
}

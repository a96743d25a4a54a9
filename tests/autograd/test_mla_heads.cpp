// The mla_heads op: agreement with the heads composed from narrow, RoPE, expand and cat (values and
// gradients), f64 gradchecks (strided inputs, one token, gradients of one output alone), and errors.
#include "composed.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

constexpr int64_t kNope = 4, kRope = 6, kV = 5;

// RoPE tables for kRope dims over P positions (angles p * 0.7^i), in f64.
std::pair<Tensor, Tensor> tables(int64_t P) {
  std::vector<double> c, s;
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < kRope / 2; ++i) {
      const double angle = static_cast<double>(p) * std::pow(0.7, static_cast<double>(i));
      c.push_back(std::cos(angle)), s.push_back(std::sin(angle));
    }
  return {from_vector(c, {P, kRope / 2}), from_vector(s, {P, kRope / 2})};
}

// The three outputs as one vector, for gradcheck and the comparisons.
Tensor flat(const MlaHeads& h) { return cat({reshape(h.query, {-1}), reshape(h.key, {-1}), reshape(h.value, {-1})}, 0); }

MlaHeads composed(const Tensor& q, const Tensor& kv, const Tensor& k_pe, const Tensor& cos, const Tensor& sin) {
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2);
  std::vector<int64_t> positions(static_cast<size_t>(L));
  for (int64_t t = 0; t < L; ++t) positions[static_cast<size_t>(t)] = t;
  const Tensor q_pe = testing::rope_composed(narrow(q, 3, kNope, kRope), cos, sin, positions);
  const Tensor k_rot = testing::rope_composed(unsqueeze(k_pe, 2), cos, sin, positions);  // [B, L, 1, rope]
  return {cat({narrow(q, 3, 0, kNope), q_pe}, 3), cat({narrow(kv, 3, 0, kNope), expand(k_rot, {B, L, H, kRope})}, 3),
          narrow(kv, 3, kNope, kV)};
}

}  // namespace

TEST_CASE("mla_heads equals the heads composed from primitive ops, values and gradients", "[mla_heads]") {
  const auto rope = tables(9);
  const Tensor &cos = rope.first, &sin = rope.second;
  const std::vector<Tensor> inputs = {randn64({2, 5, 3, kNope + kRope}, 1), randn64({2, 5, 3, kNope + kV}, 2),
                                      randn64({2, 5, kRope}, 3)};
  testing::require_same_as_composed([&](const std::vector<Tensor>& in) { return flat(mla_heads(in[0], in[1], in[2], cos, sin, kNope)); },
                                    [&](const std::vector<Tensor>& in) { return flat(composed(in[0], in[1], in[2], cos, sin)); },
                                    inputs, 1e-13);
  const MlaHeads heads = mla_heads(inputs[0], inputs[1], inputs[2], cos, sin, kNope);
  CHECK(heads.query.shape() == Shape{2, 5, 3, kNope + kRope});
  CHECK(heads.key.shape() == Shape{2, 5, 3, kNope + kRope});
  CHECK(heads.value.shape() == Shape{2, 5, 3, kV});
}

TEST_CASE("mla_heads passes gradcheck in f64: strided inputs, one token, each output alone", "[mla_heads]") {
  const auto rope = tables(6);
  const Tensor &cos = rope.first, &sin = rope.second;
  const Tensor q = randn64({2, 3, 2, kNope + kRope}, 4), kv = randn64({2, 3, 2, kNope + kV}, 5), k_pe = randn64({2, 3, kRope}, 6);
  CHECK(autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return flat(mla_heads(in[0], in[1], in[2], cos, sin, kNope)); }, {q, kv, k_pe}));
  // k_pe as MLA takes it: a narrow of a wider projection; q as a transposed view.
  const Tensor compressed = randn64({2, 3, 7 + kRope}, 7), q_t = randn64({2, 2, 3, kNope + kRope}, 8);
  CHECK(autograd::gradcheck(
      [&](const std::vector<Tensor>& in) {
        return flat(mla_heads(transpose(in[0], 1, 2), in[1], narrow(in[2], 2, 7, kRope), cos, sin, kNope));
      },
      {q_t, kv, compressed}));
  CHECK(autograd::gradcheck(  // one token, one head
      [&](const std::vector<Tensor>& in) { return flat(mla_heads(in[0], in[1], in[2], cos, sin, kNope)); },
      {randn64({1, 1, 1, kNope + kRope}, 9), randn64({1, 1, 1, kNope + kV}, 10), randn64({1, 1, kRope}, 11)}));
  // Only one output used: the others' gradients are absent, and count as zeros.
  for (int which = 0; which < 3; ++which) {
    INFO("output " << which);
    CHECK(autograd::gradcheck(
        [&](const std::vector<Tensor>& in) {
          const MlaHeads h = mla_heads(in[0], in[1], in[2], cos, sin, kNope);
          return which == 0 ? h.query : which == 1 ? h.key : h.value;
        },
        {q, kv, k_pe}));
  }
}

TEST_CASE("mla_heads refuses inputs that do not fit together, naming the shapes", "[mla_heads]") {
  const auto rope = tables(4);
  const Tensor &cos = rope.first, &sin = rope.second;
  const Tensor q = zeros({1, 3, 2, kNope + kRope}, kFloat64), kv = zeros({1, 3, 2, kNope + kV}, kFloat64);
  const Tensor k_pe = zeros({1, 3, kRope}, kFloat64);
  CHECK_THROWS_WITH(mla_heads(reshape(q, {3, 2, kNope + kRope}), kv, k_pe, cos, sin, kNope),
                    Catch::Contains("mla_heads: expected q [B, L, H, nope + rope]") && Catch::Contains("got q [3, 2, 10]"));
  CHECK_THROWS_WITH(mla_heads(q, kv, k_pe, cos, sin, 5), Catch::Contains("nope plus an even rope dim") && Catch::Contains("nope 5"));
  CHECK_THROWS_WITH(mla_heads(q, kv, k_pe, cos, sin, 11), Catch::Contains("nope plus an even rope dim"));
  CHECK_THROWS_WITH(mla_heads(q, zeros({1, 3, 4, kNope + kV}, kFloat64), k_pe, cos, sin, kNope),
                    Catch::Contains("must agree in [B, L(, H)]") && Catch::Contains("kv [1, 3, 4, 9]"));
  CHECK_THROWS_WITH(mla_heads(q, kv, zeros({1, 2, kRope}, kFloat64), cos, sin, kNope), Catch::Contains("k_pe [1, 2, 6]"));
  CHECK_THROWS_WITH(mla_heads(q, zeros({1, 3, 2, 3}, kFloat64), k_pe, cos, sin, kNope), Catch::Contains("kv's last dim must hold nope + V"));
  CHECK_THROWS_WITH(mla_heads(q, kv, zeros({1, 3, 4}, kFloat64), cos, sin, kNope), Catch::Contains("k_pe's the rope dim 6"));
  CHECK_THROWS_WITH(mla_heads(q, kv.to(kFloat32), k_pe, cos, sin, kNope),
                    "mla_heads: q, kv and k_pe must be of one floating-point dtype, got float64, float32, float64");
  CHECK_THROWS_WITH(mla_heads(q, kv, k_pe, cos.to(kFloat32), sin, kNope),
                    "mla_heads: the RoPE tables must be contiguous float64 [P, 3] with P >= L = 3, got float32 [4, 3]");
  CHECK_THROWS_WITH(mla_heads(q, kv, k_pe, narrow(cos, 0, 0, 2), narrow(sin, 0, 0, 2), kNope),
                    Catch::Contains("with P >= L = 3, got float64 [2, 3]"));
}

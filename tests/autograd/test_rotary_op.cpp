// The rotary_embedding op: a hand-computed rotation, agreement with RoPE composed from primitive ops,
// f64 gradchecks (strided views, explicit positions, one token), the backward as the inverse rotation,
// and errors.
#include "composed.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

// Tables of angle p * theta_i for theta = {1, 0.01} (dim 4, base 10000), positions 0 .. P-1, in f64.
std::pair<Tensor, Tensor> tables(int64_t P, const std::vector<double>& theta = {1.0, 0.01}) {
  std::vector<double> c, s;
  for (int64_t p = 0; p < P; ++p)
    for (const double t : theta) c.push_back(std::cos(static_cast<double>(p) * t)), s.push_back(std::sin(static_cast<double>(p) * t));
  const Shape shape{P, static_cast<int64_t>(theta.size())};
  return {from_vector(c, shape), from_vector(s, shape)};
}

std::vector<int64_t> from(int64_t start, int64_t T) {
  std::vector<int64_t> p(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) p[static_cast<size_t>(t)] = start + t;
  return p;
}

}  // namespace

TEST_CASE("rotary_embedding: a pair at position 1 rotates by 1 radian (hand values)", "[rotary_op]") {
  const auto rope = tables(4);
  const Tensor &cos = rope.first, &sin = rope.second;
  // (1, 2) by 1 rad: (cos 1 - 2 sin 1, sin 1 + 2 cos 1); (3, 4) by 0.01 rad likewise.
  const double c1 = std::cos(1.0), s1 = std::sin(1.0), c2 = std::cos(0.01), s2 = std::sin(0.01);
  const Tensor x = from_vector<double>({1, 2, 3, 4}, {1, 1, 1, 4});
  require_close(rotary_embedding(x, cos, sin, {1}), {c1 - 2 * s1, s1 + 2 * c1, 3 * c2 - 4 * s2, 3 * s2 + 4 * c2}, 1e-15);
  require_close(rotary_embedding(x, cos, sin, {0}), {1, 2, 3, 4}, 0);  // position 0: identity
  const Tensor x32 = x.to(kFloat32);
  const Tensor y32 = rotary_embedding(x32, cos.to(kFloat32), sin.to(kFloat32), {1});
  REQUIRE(y32.dtype() == kFloat32);
  require_close(y32, {c1 - 2 * s1, s1 + 2 * c1, 3 * c2 - 4 * s2, 3 * s2 + 4 * c2}, 1e-6);
}

TEST_CASE("rotary_embedding equals RoPE composed from primitive ops, values and gradients", "[rotary_op]") {
  const auto rope = tables(16, {1.0, 0.3, 0.05});
  const Tensor &cos = rope.first, &sin = rope.second;
  const std::vector<int64_t> positions = {15, 0, 7, 3};
  testing::require_same_as_composed(
      [&](const std::vector<Tensor>& in) { return rotary_embedding(in[0], cos, sin, positions); },
      [&](const std::vector<Tensor>& in) { return testing::rope_composed(in[0], cos, sin, positions); },
      {randn64({2, 4, 3, 6}, 1)}, 1e-13);
}

TEST_CASE("rotary_embedding passes gradcheck in f64: strided views, explicit positions, one token", "[rotary_op]") {
  const auto rope = tables(16, {1.0, 0.3, 0.05});
  const Tensor &cos = rope.first, &sin = rope.second;
  const Tensor x = randn64({2, 3, 2, 6}, 1);
  CHECK(autograd::gradcheck([&](const std::vector<Tensor>& in) { return rotary_embedding(in[0], cos, sin, from(5, 3)); }, {x}));
  // A narrow of a wider last dim (as MLA's q_pe) and a permuted view (inner stride != 1).
  const Tensor wide = randn64({2, 3, 2, 10}, 2);
  CHECK(autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return rotary_embedding(narrow(in[0], 3, 4, 6), cos, sin, from(2, 3)); }, {wide}));
  const Tensor swapped = randn64({2, 6, 2, 3}, 3);
  CHECK(autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return rotary_embedding(transpose(in[0], 1, 3), cos, sin, from(0, 3)); },
      {swapped}));
  CHECK(autograd::gradcheck([&](const std::vector<Tensor>& in) { return rotary_embedding(in[0], cos, sin, {15, 0, 7}); }, {x}));
  CHECK(autograd::gradcheck([&](const std::vector<Tensor>& in) { return rotary_embedding(in[0], cos, sin, {9}); },
                            {randn64({1, 1, 1, 6}, 4)}));
}

TEST_CASE("rotary_embedding's backward rotates by -theta, undoing the forward", "[rotary_op]") {
  // The rotation is orthogonal, so the gradient of sum(w * rope(x)) is rope^{-1}(w); with w = rope(x) it is x.
  const auto rope = tables(64, {1.0, 0.3, 0.05, 0.001});
  const Tensor &cos = rope.first, &sin = rope.second;
  const Tensor x = randn64({1, 4, 3, 8}, 4);
  const Tensor y = rotary_embedding(x, cos, sin, from(20, 4));
  sum(y * y.detach()).backward();
  require_close(x.grad(), x.detach(), 1e-13);
}

TEST_CASE("rotary_embedding refuses bad shapes, dtypes, tables and positions, naming them", "[rotary_op]") {
  const auto rope = tables(8);
  const Tensor &cos = rope.first, &sin = rope.second;
  const Tensor x = zeros({1, 3, 2, 4}, kFloat64);
  CHECK_THROWS_WITH(rotary_embedding(zeros({3, 4}, kFloat64), cos, sin, {0, 1, 2}),
                    "rotary_embedding: x must be [B, T, H, D] with D even, got [3, 4]");
  CHECK_THROWS_WITH(rotary_embedding(zeros({1, 3, 2, 5}, kFloat64), cos, sin, {0, 1, 2}),
                    "rotary_embedding: x must be [B, T, H, D] with D even, got [1, 3, 2, 5]");
  CHECK_THROWS_WITH(rotary_embedding(zeros({1, 3, 2, 4}, kInt64), cos, sin, {0, 1, 2}),
                    Catch::Contains("floating-point") && Catch::Contains("int64"));
  CHECK_THROWS_WITH(rotary_embedding(x.to(kFloat32), cos, sin, {0, 1, 2}),
                    Catch::Contains("cos must be a contiguous float32 table [P, 2]") && Catch::Contains("got float64 [8, 2]"));
  CHECK_THROWS_WITH(rotary_embedding(x, cos, narrow(sin, 1, 0, 1), {0, 1, 2}), Catch::Contains("sin must be") && Catch::Contains("[8, 1]"));
  CHECK_THROWS_WITH(rotary_embedding(x, cos, transpose(tables(2).second, 0, 1), {0, 1, 2}), Catch::Contains("sin must be a contiguous"));
  CHECK_THROWS_WITH(rotary_embedding(x, cos, narrow(sin, 0, 0, 4), {0, 1, 2}), Catch::Contains("tables differ in length"));
  CHECK_THROWS_WITH(rotary_embedding(x, cos, sin, {0, 1}), "rotary_embedding: 2 positions for x [1, 3, 2, 4] with T = 3");
  CHECK_THROWS_WITH(rotary_embedding(x, cos, sin, {0, 8, 1}), "rotary_embedding: position 8 out of range [0, 8) of the tables");
  CHECK_THROWS_WITH(rotary_embedding(x, cos, sin, {0, -1, 1}), Catch::Contains("position -1 out of range"));
}

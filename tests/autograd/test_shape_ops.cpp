// Shape ops: views (reshape/view/transpose/permute/narrow/expand/squeeze/unsqueeze/flatten) and copies
// (cat/stack/split/chunk) — values, storage sharing, gradients, errors.
#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

// 0, 1, 2, ... in row-major order: every element names its own position.
Tensor iota(const Shape& shape) { return arange(shape_numel(shape), kFloat64).reshape(shape); }

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

}  // namespace

TEST_CASE("reshape and view infer -1 and share storage", "[shape]") {
  const Tensor x = iota({2, 3, 4});
  const Tensor r = x.reshape({4, -1});
  CHECK(r.shape() == Shape{4, 6});
  CHECK(r.shares_storage(x));
  require_close(r.narrow(0, 1, 1), {6, 7, 8, 9, 10, 11});
  CHECK(x.view({-1}).shape() == Shape{24});
  CHECK(x.view({2, -1, 2}).shape() == Shape{2, 6, 2});
  CHECK(x.view({1, 24, 1}).stride(1) == 1);
  CHECK(scalar_tensor(4.0).reshape({1, 1}).shape() == Shape{1, 1});
  CHECK(zeros({1, 1}).reshape({}).shape() == Shape{});
  CHECK(zeros({0, 3}).reshape({3, 0}).shape() == Shape{3, 0});
  // With zero elements a -1 could be anything: refused, as in PyTorch.
  CHECK_THROWS_WITH(zeros({0, 3}).reshape({3, -1, 0}), Catch::Contains("reshape") && Catch::Contains("[3, -1, 0]"));
}

TEST_CASE("view follows strides: split dims stay views, merges across a gap are refused", "[shape]") {
  const Tensor x = iota({2, 3, 4});    // strides [12, 4, 1]
  const Tensor t = x.transpose(1, 2);  // [2, 4, 3], strides [12, 1, 4]
  // Splitting the stride-1 dim of size 4 into 2 x 2 needs no copy.
  const Tensor split_view = t.view({2, 2, 2, 3});
  CHECK(split_view.shares_storage(x));
  CHECK(split_view.strides() == Shape{12, 2, 1, 4});
  CHECK(values(split_view) == values(t.contiguous()));
  // Merging dims 1 and 2 (strides 1 and 4) or dims 0 and 1 (strides 12 and 1) would need a copy.
  CHECK_THROWS_WITH(t.view({2, 12}), Catch::Contains("view") && Catch::Contains("[2, 4, 3]") &&
                                         Catch::Contains("[12, 1, 4]") && Catch::Contains("reshape"));
  CHECK_THROWS_AS(t.view({8, 3}), Error);
  // reshape copies in exactly those cases, with the right values.
  const Tensor copied = t.reshape({2, 12});
  CHECK_FALSE(copied.shares_storage(x));
  CHECK(values(copied) == values(t.contiguous()));
  // A narrowed tensor: the leading dims still merge (stride 12 = 3 * 4), the sliced one cannot.
  const Tensor n = x.narrow(2, 0, 2);  // [2, 3, 2], strides [12, 4, 1]
  const Tensor merged = n.view({6, 2});
  CHECK(merged.shares_storage(x));
  require_close(merged, {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21});
  CHECK_THROWS_AS(n.view({12}), Error);
  // Broadcast (stride 0) dims can be regrouped with size-1 dims but not flattened.
  const Tensor e = from_vector<double>({1, 2, 3}).expand({2, 3});
  CHECK(e.view({2, 1, 3}).shares_storage(e));
  CHECK_THROWS_AS(e.view({6}), Error);
  require_close(e.reshape({6}), {1, 2, 3, 1, 2, 3});
}

TEST_CASE("transpose, permute, narrow, squeeze, unsqueeze and flatten are views with the right values", "[shape]") {
  const Tensor x = iota({2, 3, 4});
  const Tensor t = x.transpose(0, -1);
  CHECK(t.shape() == Shape{4, 3, 2});
  CHECK(t.shares_storage(x));
  require_close(t.narrow(0, 1, 1).narrow(1, 2, 1), {9, 21});  // x[:, 2, 1]
  const Tensor p = x.permute({1, -1, 0});
  CHECK(p.shape() == Shape{3, 4, 2});
  CHECK(p.strides() == Shape{4, 1, 12});
  require_close(p.narrow(0, 2, 1).narrow(1, 3, 1), {11, 23});  // x[:, 2, 3]
  const Tensor n = x.narrow(1, -2, 2);                         // a negative start counts from the end
  CHECK(n.shape() == Shape{2, 2, 4});
  CHECK(n.offset() == 4);
  require_close(n.narrow(2, 0, 1), {4, 8, 16, 20});
  CHECK(x.narrow(1, 3, 0).numel() == 0);
  const Tensor u = x.unsqueeze(1);
  CHECK(u.shape() == Shape{2, 1, 3, 4});
  CHECK(x.unsqueeze(-1).shape() == Shape{2, 3, 4, 1});
  CHECK(u.squeeze(1).shape() == Shape{2, 3, 4});
  CHECK(u.squeeze(0).shape() == Shape{2, 1, 3, 4});  // not of size 1: unchanged
  CHECK(u.squeeze(1).shares_storage(x));
  CHECK(x.flatten().shape() == Shape{24});
  CHECK(x.flatten(1).shape() == Shape{2, 12});
  CHECK(x.flatten(0, 1).shape() == Shape{6, 4});
  CHECK(x.flatten(0, 1).shares_storage(x));
  CHECK(scalar_tensor(1.0).flatten().shape() == Shape{1});
  require_close(x.transpose(1, 2).flatten(1).narrow(0, 0, 1), {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
}

TEST_CASE("expand broadcasts without copying", "[shape]") {
  const Tensor c = from_vector<double>({1, 2}, {2, 1});
  const Tensor e = c.expand({3, 2, 4});
  CHECK(e.shape() == Shape{3, 2, 4});
  CHECK(e.strides() == Shape{0, 1, 0});
  CHECK(e.shares_storage(c));
  require_close(e.narrow(0, 2, 1), {1, 1, 1, 1, 2, 2, 2, 2});
  CHECK(c.expand({-1, 5}).shape() == Shape{2, 5});
  CHECK(c.expand({2, 1}).is_same(c));
}

TEST_CASE("cat, stack, split and chunk", "[shape]") {
  const Tensor a = iota({2, 3}), b = iota({2, 1}) + 100.0, c = iota({2, 2}) + 200.0;
  const Tensor ab = cat({a, b, c}, 1);
  CHECK(ab.shape() == Shape{2, 6});
  require_close(ab, {0, 1, 2, 100, 200, 201, 3, 4, 5, 101, 202, 203});
  require_close(cat({a, a * -1.0}, 0), {0, 1, 2, 3, 4, 5, 0, -1, -2, -3, -4, -5});
  // Non-contiguous inputs are read through their strides.
  require_close(cat({a.transpose(0, 1), a.transpose(0, 1)}, -1), {0, 3, 0, 3, 1, 4, 1, 4, 2, 5, 2, 5});
  require_close(cat({a, zeros({0, 3}, kFloat64)}, 0), values(a));
  const Tensor s = stack({a, a + 10.0}, 1);
  CHECK(s.shape() == Shape{2, 2, 3});
  require_close(s, {0, 1, 2, 10, 11, 12, 3, 4, 5, 13, 14, 15});
  CHECK(stack({a, a}, -1).shape() == Shape{2, 3, 2});
  CHECK(stack({scalar_tensor(1.0), scalar_tensor(2.0)}, 0).shape() == Shape{2});

  const Tensor x = iota({7, 2});
  const std::vector<Tensor> parts = split(x, 3, 0);
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].shape() == Shape{3, 2});
  CHECK(parts[2].shape() == Shape{1, 2});
  require_close(parts[2], {12, 13});
  CHECK(parts[1].shares_storage(x));
  const std::vector<Tensor> sized = split(x, std::vector<int64_t>{1, 0, 6}, 0);
  REQUIRE(sized.size() == 3);
  CHECK(sized[1].numel() == 0);
  require_close(sized[0], {0, 1});
  const std::vector<Tensor> chunks = chunk(x, 3, 0);  // ceil(7 / 3) = 3 rows each, the last gets 1
  REQUIRE(chunks.size() == 3);
  CHECK(chunks[0].size(0) == 3);
  CHECK(chunks[2].size(0) == 1);
  CHECK(chunk(x, 2, 1).size() == 2);
  require_close(cat(chunks, 0), values(x));
}

TEST_CASE("shape op gradients pass gradcheck", "[shape][gradcheck]") {
  const Tensor x = randn64({2, 3, 4}, 1), y = randn64({2, 2, 4}, 2), z = randn64({3, 1}, 3);
  using F = std::function<Tensor(const std::vector<Tensor>&)>;
  const std::vector<std::pair<const char*, F>> unary = {
      {"reshape",
       [](auto& v) {
         return v[0].reshape({4, -1}) * iota({4, 6});
       }},
      {"reshape copy",
       [](auto& v) {
         return v[0].transpose(1, 2).reshape({2, 12}) * iota({2, 12});
       }},
      {"view",
       [](auto& v) {
         return v[0].view({6, 4}) * iota({6, 4});
       }},
      {"transpose",
       [](auto& v) {
         return v[0].transpose(0, 2) * iota({4, 3, 2});
       }},
      {"permute",
       [](auto& v) {
         return v[0].permute({2, 0, 1}) * iota({4, 2, 3});
       }},
      {"narrow", [](auto& v) { return v[0].narrow(1, 1, 2); }},
      {"narrow last", [](auto& v) { return v[0].narrow(2, 3, 1); }},
      {"squeeze", [](auto& v) { return v[0].narrow(1, 0, 1).squeeze(1); }},
      {"unsqueeze",
       [](auto& v) {
         return v[0].unsqueeze(1) * iota({2, 2, 3, 4});
       }},
      {"flatten",
       [](auto& v) {
         return v[0].flatten(1) * iota({2, 12});
       }},
      {"split",
       [](auto& v) {
         auto p = split(v[0], 2, 2);
         return p[0] * p[1];
       }},
      {"chunk",
       [](auto& v) {
         auto p = chunk(v[0], 3, 1);
         return p[0] - p[2] * 2.0;
       }},
  };
  for (auto& [name, fn] : unary) {
    INFO(name);
    CHECK(autograd::gradcheck(fn, {x}));
  }
  // expand sums the gradient over the broadcast dims (the new leading one and the size-1 one).
  CHECK(autograd::gradcheck([](auto& v) { return v[0].expand({2, 3, 5}) * iota({2, 3, 5}); }, {z}));
  CHECK(autograd::gradcheck([](auto& v) { return cat({v[0], v[1]}, 1); }, {x, y}));
  // A strided input (a transposed view) and one used twice.
  CHECK(autograd::gradcheck(
      [](auto& v) {
        return cat({v[1], v[0].transpose(1, 2), v[1]}, -2);
      },
      {randn64({2, 4, 3}, 5), y}));
  CHECK(autograd::gradcheck([](auto& v) { return stack({v[0], v[0] * 2.0, v[1]}, 2); }, {x, randn64({2, 3, 4}, 4)}));
}

TEST_CASE("views pass gradients back to the viewed tensor", "[shape]") {
  const Tensor x = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  // Two overlapping slices of the same leaf: their gradients add up where they overlap.
  sum(x.narrow(1, 0, 2) * 2.0).backward();
  sum(x.narrow(1, 1, 2).transpose(0, 1) * 3.0).backward();
  require_close(x.grad(), {2, 5, 3, 2, 5, 3});
  // expand's gradient counts how often each element was repeated.
  const Tensor b = from_vector<double>({1, 2}).requires_grad_();
  sum(b.expand({4, 2})).backward();
  require_close(b.grad(), {4, 4});
}

TEST_CASE("shape op errors name the op and the shapes", "[shape]") {
  const Tensor x = iota({2, 3});
  CHECK_THROWS_WITH(x.reshape({4, 2}),
                    Catch::Contains("reshape") && Catch::Contains("[2, 3]") && Catch::Contains("[4, 2]"));
  CHECK_THROWS_WITH(x.reshape({-1, -1}), Catch::Contains("more than one -1"));
  CHECK_THROWS_WITH(x.reshape({-1, 4}), Catch::Contains("reshape") && Catch::Contains("6 elements"));
  CHECK_THROWS_WITH(x.view({-2, 3}), Catch::Contains("view") && Catch::Contains("negative"));
  CHECK_THROWS_WITH(x.transpose(0, 2), Catch::Contains("transpose") && Catch::Contains("dim 2"));
  CHECK_THROWS_WITH(x.permute({0}), Catch::Contains("permute") && Catch::Contains("[2, 3]"));
  CHECK_THROWS_WITH(x.permute({1, 1}), Catch::Contains("permute") && Catch::Contains("repeated"));
  CHECK_THROWS_WITH(x.narrow(1, 2, 2), Catch::Contains("narrow") && Catch::Contains("[2, 4)"));
  CHECK_THROWS_WITH(x.narrow(0, 0, -1), Catch::Contains("narrow"));
  CHECK_THROWS_WITH(x.expand({3, 3}),
                    Catch::Contains("expand") && Catch::Contains("[2, 3]") && Catch::Contains("[3, 3]"));
  CHECK_THROWS_WITH(x.expand({3}), Catch::Contains("expand") && Catch::Contains("fewer dims"));
  CHECK_THROWS_WITH(x.unsqueeze(0).expand({-2, 2, 3}), Catch::Contains("expand") && Catch::Contains("-2"));
  CHECK_THROWS_WITH(x.squeeze(2), Catch::Contains("squeeze"));
  CHECK_THROWS_WITH(x.unsqueeze(3), Catch::Contains("unsqueeze"));
  CHECK_THROWS_WITH(x.flatten(1, 0), Catch::Contains("flatten"));
  CHECK_THROWS_WITH(cat({}, 0), Catch::Contains("cat") && Catch::Contains("no tensors"));
  CHECK_THROWS_WITH(cat({x, iota({3, 3})}, 1),
                    Catch::Contains("cat") && Catch::Contains("[3, 3]") && Catch::Contains("dim 1"));
  CHECK_THROWS_WITH(cat({x, iota({6})}, 0), Catch::Contains("cat") && Catch::Contains("rank"));
  CHECK_THROWS_WITH(cat({x, zeros({2, 3})}, 0), Catch::Contains("cat") && Catch::Contains("float32"));
  CHECK_THROWS_WITH(cat({scalar_tensor(1.0), scalar_tensor(2.0)}, 0),
                    Catch::Contains("cat") && Catch::Contains("0-dim"));
  CHECK_THROWS_WITH(stack({x, iota({3, 2})}, 0), Catch::Contains("stack") && Catch::Contains("[3, 2]"));
  CHECK_THROWS_WITH(split(x, 0, 0), Catch::Contains("split") && Catch::Contains("positive"));
  CHECK_THROWS_WITH(split(x, std::vector<int64_t>{1, 1}, 1),
                    Catch::Contains("split") && Catch::Contains("add up to 2"));
  CHECK_THROWS_WITH(chunk(x, 0, 0), Catch::Contains("chunk"));
}

// topk, sort and argsort: values, tie order, stability, NaN placement, other dims, gradients, errors.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

std::vector<int64_t> ids(const Tensor& t) { return t.to_vector<int64_t>(); }

}  // namespace

TEST_CASE("topk picks the largest or smallest values, lower index first on ties", "[sort]") {
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor x = from_vector<double>({1, 5, 3, 5, 2}).to(dt);
    auto [top, top_ids] = topk(x, 2);
    require_close(top, {5, 5});
    CHECK(ids(top_ids) == std::vector<int64_t>{1, 3});
    auto [top3, top3_ids] = topk(x, 3);
    require_close(top3, {5, 5, 3});
    CHECK(ids(top3_ids) == std::vector<int64_t>{1, 3, 2});
    auto [low, low_ids] = topk(x, 2, -1, false);
    require_close(low, {1, 2});
    CHECK(ids(low_ids) == std::vector<int64_t>{0, 4});
    auto [all, all_ids] = topk(x, 5);
    CHECK(ids(all_ids) == std::vector<int64_t>{1, 3, 2, 4, 0});
    auto [none, none_ids] = topk(x, 0);
    CHECK(none.shape() == Shape{0});
    CHECK(none_ids.shape() == Shape{0});
  }
  auto [v, i] = topk(from_vector<int64_t>({4, -2, 9, 4}), 3);
  CHECK(ids(v) == std::vector<int64_t>{9, 4, 4});
  CHECK(ids(i) == std::vector<int64_t>{2, 0, 3});
}

TEST_CASE("topk and sort work along a non-last dim", "[sort]") {
  // Columns of [[1, 6], [4, 2], [3, 5]]: [1, 4, 3] and [6, 2, 5].
  const Tensor x = from_vector<double>({1, 6, 4, 2, 3, 5}, {3, 2});
  auto [values, indices] = topk(x, 2, 0);
  CHECK(values.shape() == Shape{2, 2});
  require_close(values, {4, 6, 3, 5});
  CHECK(ids(indices) == std::vector<int64_t>{1, 0, 2, 2});
  auto [sorted, order] = sort(x, 0, true);
  require_close(sorted, {4, 6, 3, 5, 1, 2});
  CHECK(ids(order) == std::vector<int64_t>{1, 0, 2, 2, 0, 1});
  // A middle dim of a non-contiguous input equals sorting the contiguous copy.
  const Tensor y = randn64({4, 3, 5}, 1).detach().transpose(0, 2);
  auto [a, ai] = sort(y, 1);
  auto [b, bi] = sort(y.contiguous(), 1);
  CHECK(a.to_vector<double>() == b.to_vector<double>());
  CHECK(ids(ai) == ids(bi));
}

TEST_CASE("sort is stable in both directions and argsort agrees", "[sort]") {
  const Tensor x = from_vector<double>({2, 1, 2, 1, 2});
  auto [ascending, up] = sort(x);
  require_close(ascending, {1, 1, 2, 2, 2});
  CHECK(ids(up) == std::vector<int64_t>{1, 3, 0, 2, 4});
  auto [descending, down] = sort(x, -1, true);
  require_close(descending, {2, 2, 2, 1, 1});
  CHECK(ids(down) == std::vector<int64_t>{0, 2, 4, 1, 3});
  CHECK(ids(argsort(x)) == ids(up));
  CHECK(ids(argsort(x, 0, true)) == ids(down));
}

TEST_CASE("sort matches std::stable_sort on many rows with many ties", "[sort]") {
  // Values 0..4 over rows of 300: heavy ties, rows spread over several parallel chunks.
  const int64_t rows = 120, n = 300;
  const Tensor x = randint(0, 5, {rows, n}).to(kFloat32);
  const std::vector<float> data = x.to_vector<float>();
  for (bool descending : {false, true}) {
    std::vector<int64_t> expected;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), int64_t{0});
      const float* row = data.data() + r * n;
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return descending ? row[a] > row[b] : row[a] < row[b]; });
      expected.insert(expected.end(), order.begin(), order.end());
    }
    CHECK(ids(argsort(x, 1, descending)) == expected);
    // topk is the same order, cut at k.
    const std::vector<int64_t> top = ids(topk(x, 7, 1, descending).second);
    for (int64_t r = 0; r < rows; ++r)
      REQUIRE(std::equal(top.begin() + r * 7, top.begin() + (r + 1) * 7, expected.begin() + r * n));
  }
}

TEST_CASE("NaN sorts as larger than every number", "[sort]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = from_vector<double>({1, nan, 0, nan, 2});
  CHECK(ids(argsort(x)) == std::vector<int64_t>{2, 0, 4, 1, 3});
  CHECK(ids(argsort(x, 0, true)) == std::vector<int64_t>{1, 3, 4, 0, 2});
  auto [top, top_ids] = topk(x, 1);
  CHECK(std::isnan(top.item()));
  CHECK(ids(top_ids) == std::vector<int64_t>{1});
  CHECK(ids(topk(x, 2, 0, false).second) == std::vector<int64_t>{2, 0});
}

TEST_CASE("topk and sort values pass gradcheck", "[sort][gradcheck]") {
  const Tensor x = randn64({3, 6}, 2), y = randn64({4, 3, 5}, 3);
  CHECK(autograd::gradcheck([](auto& v) { return topk(v[0], 3).first; }, {x}));
  CHECK(autograd::gradcheck([](auto& v) { return topk(v[0], 2, 0, false).first; }, {x}));
  CHECK(autograd::gradcheck([](auto& v) { return topk(v[0].transpose(0, 2), 2, 1).first; }, {y}));
  CHECK(autograd::gradcheck([](auto& v) { return sort(v[0], 1, true).first; }, {y}));
  // The gradient lands on the picked positions only.
  const Tensor z = from_vector<double>({1, 5, 3, 4}).requires_grad_();
  sum(topk(z, 2).first * from_vector<double>({10, 20})).backward();
  require_close(z.grad(), {0, 10, 0, 20});
}

TEST_CASE("topk checks k and dim", "[sort]") {
  const Tensor x = randn64({2, 3}, 4).detach();
  CHECK_THROWS_WITH(topk(x, 4), Catch::Contains("topk") && Catch::Contains("k = 4") && Catch::Contains("[0, 3]"));
  CHECK_THROWS_WITH(topk(x, -1), Catch::Contains("topk") && Catch::Contains("k = -1"));
  CHECK_THROWS_WITH(topk(x, 1, 2), Catch::Contains("topk") && Catch::Contains("dim 2"));
  CHECK_THROWS_WITH(sort(x, -3), Catch::Contains("sort") && Catch::Contains("dim -3"));
  CHECK_THROWS_WITH(argsort(x, 5), Catch::Contains("argsort"));
  auto [v, i] = topk(scalar_tensor(3.0, kFloat64), 1);
  CHECK(v.shape() == Shape{});
  CHECK(v.item() == 3.0);
  CHECK(i.item() == 0.0);
  CHECK_THROWS_WITH(topk(scalar_tensor(3.0, kFloat64), 0), Catch::Contains("topk") && Catch::Contains("[1, 1]"));
}

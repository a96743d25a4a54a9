// Reductions: sum, mean, amax, max, argmax over dims — values, shapes, gradients, determinism, errors.
#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

// x[i][j][k] = 100 i + 10 j + k: every partial sum below is easy to compute by hand.
Tensor digits(DType dtype) {
  std::vector<double> v;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) v.push_back(100 * i + 10 * j + k);
  return from_vector<double>(v, {2, 3, 4}).to(dtype);
}

}  // namespace

TEST_CASE("sum and mean over one, several, negative and all dims", "[reduce]") {
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor x = digits(dt);
    // Over k: 4 (100 i + 10 j) + 0+1+2+3.
    const Tensor s2 = sum(x, {2});
    CHECK(s2.shape() == Shape{2, 3});
    require_close(s2, {6, 46, 86, 406, 446, 486});
    require_close(sum(x, {-1}), {6, 46, 86, 406, 446, 486});
    // Over j: 3 (100 i + k) + 10 (0+1+2).
    require_close(sum(x, {1}), {30, 33, 36, 39, 330, 333, 336, 339});
    // Over i: 100 + 2 (10 j + k).
    require_close(sum(x, {0}), {100, 102, 104, 106, 120, 122, 124, 126, 140, 142, 144, 146});
    // Over i and k, given in any order and sign.
    const Tensor s02 = sum(x, {-1, 0});
    CHECK(s02.shape() == Shape{3});
    require_close(s02, {412, 492, 572});
    const Tensor keep = sum(x, {0, 2}, true);
    CHECK(keep.shape() == Shape{1, 3, 1});
    require_close(keep, {412, 492, 572});
    // All dims: a 0-dim scalar; keepdim keeps every dim as 1.
    const Tensor all = sum(x);
    CHECK(all.shape() == Shape{});
    CHECK(all.item() == 1476);
    CHECK(sum(x, {}, true).shape() == Shape{1, 1, 1});
    CHECK(sum(x, {0, 1, 2}).shape() == Shape{});
    require_close(mean(x, {2}), {1.5, 11.5, 21.5, 101.5, 111.5, 121.5});
    require_close(mean(x, {0, 1}, true), {60, 61, 62, 63});  // 50 + 10 + k
    CHECK(mean(x, {0, 1}, true).shape() == Shape{1, 1, 4});
    CHECK(mean(x).item() == Approx(1476.0 / 24));
  }
  // Integer sums stay exact and integer.
  const Tensor ids = arange(10);
  CHECK(sum(ids).dtype() == kInt64);
  CHECK(sum(ids).item() == 45);
  // Reducing an empty dim gives zeros; a 0-dim input reduces to itself.
  require_close(sum(zeros({2, 0}), {1}), {0, 0});
  CHECK(sum(scalar_tensor(2.5)).item() == 2.5);
  CHECK(sum(scalar_tensor(2.5), {0}).item() == 2.5);
}

TEST_CASE("reductions read non-contiguous inputs correctly", "[reduce]") {
  const Tensor x = digits(kFloat64);
  const Tensor xt = x.permute({2, 0, 1});  // [4, 2, 3], strided
  CHECK_FALSE(xt.is_contiguous());
  require_close(sum(xt, {0}), {6, 46, 86, 406, 446, 486});
  require_close(sum(xt, {1, 2}), {360, 366, 372, 378});  // 300 + 60 + 6 k
  require_close(amax(xt, {0}), {3, 13, 23, 103, 113, 123});
  const Tensor sliced = x.narrow(2, 1, 2);  // k in {1, 2}
  require_close(sum(sliced, {2}), {3, 23, 43, 203, 223, 243});
  // Leading dims of an expanded (stride 0) tensor.
  const Tensor row = from_vector<double>({1, 2, 3}).expand({4, 3});
  require_close(sum(row, {0}), {4, 8, 12});
}

TEST_CASE("amax, max and argmax pick the largest values and first indices", "[reduce]") {
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor x = from_vector<double>({3, -1, 7, 7, 2, 7, -5, -2, -9}, {3, 3}).to(dt);
    require_close(amax(x, {1}), {7, 7, -2});
    require_close(amax(x, {0}), {7, 2, 7});
    CHECK(amax(x).shape() == Shape{});
    CHECK(amax(x).item() == 7);
    CHECK(max(x).item() == 7);
    CHECK(amax(x, {1}, true).shape() == Shape{3, 1});
    auto [values, indices] = max(x, 1);
    require_close(values, {7, 7, -2});
    CHECK(indices.dtype() == kInt64);
    CHECK(indices.to_vector<int64_t>() == std::vector<int64_t>{2, 0, 1});  // row 1 ties 7, 7: the first
    auto [kept, kept_ids] = max(x, -2, true);
    CHECK(kept.shape() == Shape{1, 3});
    require_close(kept, {7, 2, 7});
    CHECK(kept_ids.to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0});
    CHECK(argmax(x, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0});
    CHECK(argmax(x, 1, true).shape() == Shape{3, 1});
    CHECK_FALSE(argmax(x.to(kFloat64).requires_grad_(), 1).requires_grad());
  }
  CHECK(argmax(from_vector<int64_t>({4, 9, 9, 1}), 0).item() == 1);
  // A 0-dim tensor is its own maximum, at index 0, and passes its gradient straight through.
  const Tensor s = scalar_tensor(-2.5, kFloat64).requires_grad_();
  auto [value, index] = max(s, 0);
  CHECK(value.shape() == Shape{});
  CHECK(value.item() == -2.5);
  CHECK(index.item() == 0);
  (value * 3.0).backward();
  CHECK(s.grad().item() == 3.0);
}

TEST_CASE("reduction gradients pass gradcheck, with non-contiguous inputs", "[reduce][gradcheck]") {
  const Tensor x = randn64({3, 4, 5}, 1);
  using F = std::function<Tensor(const std::vector<Tensor>&)>;
  const std::vector<std::pair<const char*, F>> cases = {
      {"sum all", [](auto& v) { return sum(v[0]); }},
      {"sum dim", [](auto& v) { return sum(v[0], {1}); }},
      {"sum dims keepdim",
       [](auto& v) {
         return sum(v[0], {0, -1}, true);
       }},
      {"sum leading",
       [](auto& v) {
         return sum(v[0], {0, 1});
       }},
      {"mean all", [](auto& v) { return mean(v[0]); }},
      {"mean dims",
       [](auto& v) {
         return mean(v[0], {2, 0});
       }},
      {"mean keepdim", [](auto& v) { return mean(v[0], {1}, true); }},
      {"amax dim", [](auto& v) { return amax(v[0], {1}); }},
      {"amax dims",
       [](auto& v) {
         return amax(v[0], {0, 2}, true);
       }},
      {"amax all", [](auto& v) { return amax(v[0]); }},
      {"max dim", [](auto& v) { return max(v[0], 2).first; }},
      {"max keepdim", [](auto& v) { return max(v[0], 0, true).first; }},
  };
  for (auto& [name, f] : cases) {
    INFO(name);
    const auto& fn = f;  // a plain reference: clang 14 cannot capture structured bindings
    CHECK(autograd::gradcheck(fn, {x}));
    // The same reduction of a permuted (strided) view.
    CHECK(autograd::gradcheck([&](auto& v) { return fn({v[0].permute({2, 0, 1})}); }, {x}));
  }
}

TEST_CASE("amax splits the gradient evenly between tied maxima; max sends it to the first", "[reduce]") {
  const Tensor x = from_vector<double>({1, 5, 5, 2, 3, 3, 3, 0}, {2, 4}).requires_grad_();
  sum(amax(x, {1}) * from_vector<double>({2, 3})).backward();
  require_close(x.grad(), {0, 1, 1, 0, 1, 1, 1, 0});  // 2 shared by two, 3 shared by three
  x.set_grad(Tensor());
  amax(x).backward();
  require_close(x.grad(), {0, 0.5, 0.5, 0, 0, 0, 0, 0});
  x.set_grad(Tensor());
  sum(max(x, 1).first).backward();
  require_close(x.grad(), {0, 1, 0, 0, 1, 0, 0, 0});
}

TEST_CASE("large sums are bitwise identical for any thread count", "[reduce][determinism]") {
  const int before = get_num_threads();
  Generator gen(5);
  const Tensor big = randn({1 << 21}, kFloat32, &gen);  // one long row: split into blocks
  const Tensor wide = randn({4096, 512}, kFloat32, &gen);
  auto run = [&](int threads) {
    set_num_threads(threads);
    return std::vector<std::vector<float>>{sum(big).to_vector<float>(), sum(wide, {1}).to_vector<float>(),
                                           sum(wide, {0}).to_vector<float>(), mean(wide).to_vector<float>()};
  };
  const auto one = run(1), two = run(2);
  set_num_threads(before);
  CHECK(one == two);
  // And right: f32 sums accumulate in f64, so they match an f64 reference closely.
  const std::vector<float> v = big.to_vector<float>();
  double reference = 0;
  for (float e : v) reference += e;
  CHECK(one[0][0] == Approx(reference).margin(1e-2));
}

TEST_CASE("reduction errors name the op and the offending dims", "[reduce]") {
  const Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH(sum(x, {2}), Catch::Contains("sum") && Catch::Contains("dim 2 out of range"));
  CHECK_THROWS_WITH(sum(x, {-3}), Catch::Contains("sum") && Catch::Contains("-3"));
  CHECK_THROWS_WITH(sum(x, {1, -1}), Catch::Contains("sum") && Catch::Contains("repeated"));
  CHECK_THROWS_WITH(mean(x, {0, 0}), Catch::Contains("repeated"));
  CHECK_THROWS_WITH(amax(x, {1, 1}), Catch::Contains("amax") && Catch::Contains("repeated"));
  CHECK_THROWS_WITH(mean(zeros({0, 3})), Catch::Contains("mean") && Catch::Contains("zero elements"));
  CHECK_THROWS_WITH(mean(zeros({2, 0}), {1}), Catch::Contains("mean") && Catch::Contains("[2, 0]"));
  CHECK_THROWS_WITH(mean(arange(4)), Catch::Contains("mean") && Catch::Contains("floating"));
  CHECK_THROWS_WITH(amax(zeros({0})), Catch::Contains("amax") && Catch::Contains("empty"));
  CHECK_THROWS_WITH(max(zeros({2, 0}), 1), Catch::Contains("max") && Catch::Contains("empty"));
  CHECK_THROWS_WITH(max(x, 2), Catch::Contains("max") && Catch::Contains("out of range"));
  CHECK_THROWS_WITH(argmax(x, -3), Catch::Contains("out of range"));
}

// Elementwise ops: values, broadcasting, gradchecks, and errors.
#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

TEST_CASE("binary ops broadcast like NumPy", "[elementwise]") {
  const Tensor a = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = from_vector<double>({10, 20, 30}, {3});
  require_close(a + b, {11, 22, 33, 14, 25, 36});
  require_close(a - from_vector<double>({1, 2}, {2, 1}), {0, 1, 2, 2, 3, 4});
  require_close(a * 2.0, {2, 4, 6, 8, 10, 12});
  require_close(1.0 / from_vector<double>({2, 4}, {2}), {0.5, 0.25});
  require_close(a.transpose(0, 1) * from_vector<double>({1, -1}, {2}), {1, -4, 2, -5, 3, -6});
  CHECK_THROWS_WITH(a + from_vector<double>({1, 2}, {2}), Catch::Contains("add") && Catch::Contains("[2, 3]"));
  CHECK_THROWS_WITH(a + from_vector<float>({1, 2, 3}, {3}), Catch::Contains("dtype"));
}

TEST_CASE("unary ops match hand-computed values in f32 and f64", "[elementwise]") {
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor x = from_vector<double>({-1.0, 0.5, 2.0}, {3}).to(dt);
    require_close(exp(x), {std::exp(-1.0), std::exp(0.5), std::exp(2.0)}, 1e-6);
    require_close(relu(x), {0, 0.5, 2});
    require_close(sigmoid(x), {1 / (1 + std::exp(1.0)), 1 / (1 + std::exp(-0.5)), 1 / (1 + std::exp(-2.0))}, 1e-6);
    require_close(silu(x), {-1 / (1 + std::exp(1.0)), 0.5 / (1 + std::exp(-0.5)), 2 / (1 + std::exp(-2.0))}, 1e-6);
    require_close(gelu(x), {-0.15865525393145707, 0.34573123063700656, 1.9544997361036416}, 1e-6);
    require_close(clamp(x, 0, 1), {0, 0.5, 1});
    require_close(pow(abs(x), 2.0), {1, 0.25, 4});
  }
  CHECK_THROWS_WITH(exp(arange(3)), Catch::Contains("exp") && Catch::Contains("floating"));
}

TEST_CASE("elementwise gradients pass gradcheck, with broadcast and non-contiguous inputs", "[elementwise][gradcheck]") {
  using F = std::function<Tensor(const std::vector<Tensor>&)>;
  const Tensor a = randn64({3, 4}, 1), b = randn64({4}, 2), c = randn64({4, 3}, 3);
  const Tensor pos = (abs(randn64({3, 4}, 4)) + 0.5).detach().requires_grad_();
  const std::vector<std::pair<const char*, F>> binary = {
      {"add", [](auto& v) { return v[0] + v[1]; }},
      {"sub", [](auto& v) { return v[0] - v[1]; }},
      {"mul", [](auto& v) { return v[0] * v[1]; }},
      {"div", [](auto& v) { return v[0] / (v[1] * v[1] + 1.0); }},
  };
  for (auto& [name, f] : binary) {
    INFO(name);
    const F& fn = f;  // a plain reference: clang 14 cannot capture structured bindings
    CHECK(autograd::gradcheck(fn, {a, b}));
    CHECK(autograd::gradcheck([&](auto& v) { return fn({v[0], v[1].transpose(0, 1)}); }, {a, c}));
  }
  const std::vector<std::pair<const char*, F>> unary = {
      {"exp", [](auto& v) { return exp(v[0]); }},      {"log", [](auto& v) { return log(v[0]); }},
      {"sqrt", [](auto& v) { return sqrt(v[0]); }},    {"rsqrt", [](auto& v) { return rsqrt(v[0]); }},
      {"pow", [](auto& v) { return pow(v[0], 2.5); }}, {"square", [](auto& v) { return square(v[0]); }},
      {"tanh", [](auto& v) { return tanh(v[0]); }},    {"sigmoid", [](auto& v) { return sigmoid(v[0]); }},
      {"silu", [](auto& v) { return silu(v[0]); }},    {"gelu", [](auto& v) { return gelu(v[0]); }},
      {"neg", [](auto& v) { return -v[0]; }},          {"scalar", [](auto& v) { return 3.0 - v[0] * 2.0 + 1.0; }},
      {"rdiv", [](auto& v) { return 2.0 / v[0]; }},
  };
  for (auto& [name, f] : unary) {
    INFO(name);
    const F& fn = f;  // a plain reference: clang 14 cannot capture structured bindings
    CHECK(autograd::gradcheck(fn, {pos}));
    CHECK(autograd::gradcheck([&](auto& v) { return fn({v[0].transpose(0, 1)}); }, {pos}));
  }
  // Kinks are avoided: abs, relu and clamp are checked away from 0 and the clamp bounds.
  const Tensor away = from_vector<double>({-1.5, -0.7, 0.4, 1.3, 2.2, -2.9}, {2, 3}).requires_grad_();
  CHECK(autograd::gradcheck([](auto& v) { return abs(v[0]); }, {away}));
  CHECK(autograd::gradcheck([](auto& v) { return relu(v[0]); }, {away}));
  CHECK(autograd::gradcheck([](auto& v) { return clamp(v[0], -1.0, 2.0); }, {away}));
}

TEST_CASE("where and masked_fill route values and gradients by the mask", "[elementwise]") {
  const Tensor x = from_vector<double>({1, 2, 3, 4}, {2, 2});
  const Tensor mask = from_vector<int64_t>({1, 0}, {2});
  require_close(masked_fill(x, mask, -9), {-9, 2, -9, 4});
  require_close(where(gt(x, full({}, 2.5, kFloat64)), x, zeros({}, kFloat64)), {0, 0, 3, 4});
  const Tensor a = randn64({2, 2}, 5), b = randn64({2}, 6);
  CHECK(autograd::gradcheck([&](auto& v) { return where(mask, v[0], v[1]); }, {a, b}));
  CHECK_THROWS_AS(masked_fill(x, from_vector<int64_t>({1, 0, 1}, {3}), 0), Error);
}

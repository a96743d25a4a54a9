// SGD, Adam and AdamW: updates computed by hand, golden values from torch.optim, groups, skipping.
#include <cmath>

#include "core/bf16_weights.hpp"
#include "optim/adam.hpp"
#include "optim/sgd.hpp"
#include "problem.hpp"

using namespace latent;
using latent::testing::Regression;

namespace {

Tensor param(const std::vector<double>& values) { return from_vector<double>(values).requires_grad_(); }
void set_grad(const Tensor& p, const std::vector<double>& values) {
  p.set_grad(from_vector<double>(values).to(p.dtype()));
}
std::vector<double> values(const Tensor& t) { return t.to(kFloat64).to_vector<double>(); }

}  // namespace

TEST_CASE("SGD: plain, momentum, dampening, Nesterov and weight decay by hand", "[optim]") {
  SECTION("plain: p -= lr * g") {
    Tensor p = param({1.0, -2.0});
    optim::SGD opt({p}, {.lr = 0.1});
    set_grad(p, {0.5, 0.25});
    opt.step();
    testing::require_close(values(p), {0.95, -2.025}, 1e-15);
  }
  SECTION("momentum: the buffer starts as the first gradient, then b = 0.9 b + g") {
    Tensor p = param({0.0, 0.0});
    optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9});
    set_grad(p, {1.0, 2.0});
    opt.step();  // b = [1, 2]
    testing::require_close(values(p), {-0.1, -0.2}, 1e-15);
    set_grad(p, {0.5, -1.0});
    opt.step();  // b = [1.4, 0.8]
    testing::require_close(values(p), {-0.24, -0.28}, 1e-15);
  }
  SECTION("dampening scales the new gradient after the first step only") {
    Tensor p = param({0.0});
    optim::SGD opt({p}, {.lr = 1.0, .momentum = 0.5, .dampening = 0.25});
    set_grad(p, {2.0});
    opt.step();  // b = 2 (no dampening on the first step, as torch)
    testing::require_close(values(p), {-2.0}, 1e-15);
    set_grad(p, {4.0});
    opt.step();  // b = 0.5 * 2 + 0.75 * 4 = 4
    testing::require_close(values(p), {-6.0}, 1e-15);
  }
  SECTION("Nesterov: d = g + momentum * b") {
    Tensor p = param({0.0, 0.0});
    optim::SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
    set_grad(p, {1.0, 2.0});
    opt.step();  // b = g, d = 1.9 g
    testing::require_close(values(p), {-0.19, -0.38}, 1e-15);
    set_grad(p, {0.5, -1.0});
    opt.step();  // b = [1.4, 0.8], d = [0.5 + 1.26, -1 + 0.72]
    testing::require_close(values(p), {-0.366, -0.352}, 1e-15);
  }
  SECTION("weight decay adds wd * p to the gradient") {
    Tensor p = param({1.0, -4.0});
    optim::SGD opt({p}, {.lr = 0.5, .weight_decay = 0.1});
    set_grad(p, {0.0, 1.0});
    opt.step();
    testing::require_close(values(p), {1.0 - 0.5 * 0.1, -4.0 - 0.5 * (1.0 - 0.4)}, 1e-15);
  }
}

TEST_CASE("Adam and AdamW: closed-form first and second steps", "[optim]") {
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const std::vector<double> p0 = {0.5, -1.5, 2.0, 0.0}, g1 = {2.0, -0.5, 0.0, 1e-3}, g2 = {-1.0, -0.25, 3.0, 1e-3};

  SECTION("Adam, first step: m_hat = g, v_hat = g^2, so p moves by -lr * g / (|g| + eps), about -lr * sign(g)") {
    Tensor p = param(p0);
    optim::Adam opt({p}, {.lr = lr});
    set_grad(p, g1);
    opt.step();
    std::vector<double> expected;
    for (size_t i = 0; i < p0.size(); ++i) expected.push_back(p0[i] - lr * g1[i] / (std::abs(g1[i]) + eps));
    testing::require_close(values(p), expected, 1e-14);
    CHECK(values(p)[3] == Approx(-0.01).margin(1e-7));  // even a tiny gradient moves p by about lr
  }
  SECTION("Adam, second step with bias correction 1 - beta^2") {
    Tensor p = param(p0);
    optim::Adam opt({p}, {.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps});
    set_grad(p, g1);
    opt.step();
    set_grad(p, g2);
    opt.step();
    for (size_t i = 0; i < p0.size(); ++i) {
      const double p1 = p0[i] - lr * g1[i] / (std::abs(g1[i]) + eps);
      const double m = b1 * (1 - b1) * g1[i] + (1 - b1) * g2[i];
      const double v = b2 * (1 - b2) * g1[i] * g1[i] + (1 - b2) * g2[i] * g2[i];
      const double p2 = p1 - lr / (1 - b1 * b1) * m / (std::sqrt(v) / std::sqrt(1 - b2 * b2) + eps);
      INFO("element " << i);
      CHECK(values(p)[i] == Approx(p2).epsilon(1e-14));
    }
  }
  SECTION("Adam's weight decay is an L2 term in the gradient; AdamW's shrinks p first") {
    const double wd = 0.5;
    Tensor a = param(p0), w = param(p0);
    optim::Adam adam({a}, {.lr = lr, .weight_decay = wd});
    optim::AdamW adamw({w}, {.lr = lr, .weight_decay = wd});
    set_grad(a, g1);
    set_grad(w, g1);
    adam.step();
    adamw.step();
    for (size_t i = 0; i < p0.size(); ++i) {
      const double g = g1[i] + wd * p0[i];
      INFO("element " << i);
      CHECK(values(a)[i] == Approx(p0[i] - lr * g / (std::abs(g) + eps)).epsilon(1e-14));
      CHECK(values(w)[i] == Approx(p0[i] * (1 - lr * wd) - lr * g1[i] / (std::abs(g1[i]) + eps)).epsilon(1e-14));
    }
  }
  SECTION("AdamW's default weight decay is 0.01 (as torch.optim.AdamW)") {
    CHECK(optim::AdamWOptions{}.weight_decay == 0.01);
    CHECK(optim::AdamOptions{}.weight_decay == 0.0);
    Tensor p = param({1.0});
    optim::AdamW opt({p});
    set_grad(p, {0.0});
    opt.step();  // zero gradient: only the decay moves p
    CHECK(values(p)[0] == 1.0 - 1e-3 * 0.01);
  }
}

// Expected values printed by tests/optim/make_golden.py (torch 1.13, float64): 5 steps on the
// Regression problem, W row-major then b.
TEST_CASE("golden values from torch.optim after 5 steps", "[optim]") {
  const double tol = 1e-12;
  SECTION("SGD lr=0.1 momentum=0.9 nesterov weight_decay=0.01") {
    Regression r;
    optim::SGD opt({r.w, r.b}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
    r.train(opt, 5);
    testing::require_close(r.values(),
                           {0.31084809454234275, 0.2687580445266588, -0.71159679352328298, 0.30544570592116416,
                            0.13075280638941955, -0.26396798450563874, 0.021806643143380745, 0.21381377365302959},
                           tol);
  }
  SECTION("SGD lr=0.1 momentum=0.9 dampening=0.1 weight_decay=0.01") {
    Regression r;
    optim::SGD opt({r.w, r.b}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
    r.train(opt, 5);
    testing::require_close(r.values(),
                           {0.35831705580330225, 0.21930532538038269, -0.65389313117232717, 0.26921056542880412,
                            0.21796690787683234, -0.23108475468958814, 0.19129037288807157, 0.15452760104975971},
                           tol);
  }
  SECTION("Adam lr=0.01 weight_decay=0.1") {
    Regression r;
    optim::Adam opt({r.w, r.b}, {.lr = 0.01, .weight_decay = 0.1});
    r.train(opt, 5);
    testing::require_close(r.values(),
                           {0.14969061659489216, -0.15014042694576679, 0.25009488078672432, 0.099799777397279438,
                            -0.35015568261569374, 0.20011900250503101, 0.099540481703597541, -0.050167810946265975},
                           tol);
  }
  const std::vector<double> adamw = {0.14912176863954074,  -0.14923914856124965, 0.24869756293729051,
                                     0.099486048082767523, -0.34826545955726856, 0.19896964313962717,
                                     0.099216655513381685, -0.049751694712750844};
  SECTION("AdamW lr=0.01 weight_decay=0.1") {
    Regression r;
    optim::AdamW opt({r.w, r.b}, {.lr = 0.01, .weight_decay = 0.1});
    r.train(opt, 5);
    testing::require_close(r.values(), adamw, tol);
  }
  SECTION("AdamW in float32 follows the same trajectory to float32 accuracy") {
    Regression r(kFloat32);
    optim::AdamW opt({r.w, r.b}, {.lr = 0.01, .weight_decay = 0.1});
    r.train(opt, 5);
    CHECK(r.w.dtype() == kFloat32);
    testing::require_close(r.values(), adamw, 2e-6);
  }
  SECTION("AdamW with two groups: W (lr 0.01, decay 0.1) and b (lr 0.05, no decay)") {
    Regression r;
    optim::AdamW opt({{{r.w}, {.lr = 0.01, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.1}},
                      {{r.b}, {.lr = 0.05, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.0}}});
    CHECK(opt.num_param_groups() == 2);
    r.train(opt, 5);
    testing::require_close(r.values(),
                           {0.1477967257665089, -0.15019320332395539, 0.24890740335563957, 0.099841288585174784,
                            -0.34879417433030485, 0.19864089568361398, 0.28597016561345789, 0.12955972323292489},
                           tol);
  }
}

TEST_CASE("param groups keep their own lr and weight decay; set_lr sets all of them", "[optim]") {
  Tensor decayed = param({1.0}), plain = param({1.0});
  optim::SGD opt({{{decayed}, {.lr = 0.1, .weight_decay = 0.5}}, {{plain}, {.lr = 0.2}}});
  set_grad(decayed, {1.0});
  set_grad(plain, {1.0});
  opt.step();
  CHECK(values(decayed)[0] == Approx(1.0 - 0.1 * 1.5).epsilon(1e-15));
  CHECK(values(plain)[0] == Approx(1.0 - 0.2).epsilon(1e-15));
  CHECK(opt.lr() == 0.1);
  opt.set_lr(0.01);
  CHECK(opt.options(0).lr == 0.01);
  CHECK(opt.options(1).lr == 0.01);
  CHECK(opt.options(0).weight_decay == 0.5);
  opt.options(1).lr = 1.0;  // direct edits take effect at the next step
  opt.step();
  CHECK(values(plain)[0] == Approx(0.8 - 1.0).epsilon(1e-15));
}

TEST_CASE("a parameter without a gradient is untouched and keeps no state", "[optim]") {
  Tensor a = param({1.0, 2.0}), b = param({3.0});
  optim::AdamW opt({a, b}, {.lr = 0.1});
  for (int s = 0; s < 3; ++s) {
    set_grad(a, {1.0, -1.0});
    opt.step();
  }
  CHECK(values(b) == std::vector<double>{3.0});  // weight decay not applied either, as torch
  CHECK(opt.step_count(0) == 3);
  CHECK(opt.step_count(1) == 0);
  CHECK(opt.state_dict().count("state.1.step") == 0);
  // Its first update is a first step of its own: bias correction counts its own steps.
  set_grad(b, {5.0});
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
  set_grad(b, {5.0});
  opt.step();
  CHECK(values(b)[0] == Approx(3.0 * (1 - 0.1 * 0.01) - 0.1 * 5.0 / (5.0 + 1e-8)).epsilon(1e-14));
  CHECK(opt.step_count(0) == 3);
  CHECK(opt.step_count(1) == 1);
}

TEST_CASE("zero_grad makes gradients undefined", "[optim]") {
  Regression r;
  optim::SGD opt({r.w, r.b});
  r.backward();
  REQUIRE(r.w.grad().defined());
  opt.zero_grad();
  CHECK_FALSE(r.w.grad().defined());
  CHECK_FALSE(r.b.grad().defined());
  const std::vector<double> before = r.values();
  opt.step();  // nothing to do
  CHECK(r.values() == before);
}

TEST_CASE("large parameters are updated in parallel chunks exactly like the scalar rule", "[optim]") {
  const int before = get_num_threads();
  const int64_t n = 3 * optim::kUpdateGrain + 123;  // several chunks and a ragged tail
  Generator gen(7);
  const Tensor start = randn({n}, kFloat32, &gen), g1 = randn({n}, kFloat32, &gen), g2 = randn({n}, kFloat32, &gen);
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Tensor p = start.clone().requires_grad_();
    optim::AdamW opt({p}, {.lr = 0.01, .weight_decay = 0.1});
    p.set_grad(g1.clone());
    opt.step();
    p.set_grad(g2.clone());
    opt.step();
    results.push_back(p.to_vector<float>());
  }
  set_num_threads(before);
  CHECK(results[0] == results[1]);
  // The same rule in a plain float loop, element by element.
  const std::vector<float> p0 = start.to_vector<float>(), a = g1.to_vector<float>(), b = g2.to_vector<float>();
  for (int64_t i : {int64_t{0}, optim::kUpdateGrain - 1, optim::kUpdateGrain, 2 * optim::kUpdateGrain + 5, n - 1}) {
    float p = p0[static_cast<size_t>(i)], m = 0, v = 0;
    const float grads[2] = {a[static_cast<size_t>(i)], b[static_cast<size_t>(i)]};
    for (int t = 1; t <= 2; ++t) {
      const float g = grads[t - 1];
      p *= static_cast<float>(1 - 0.01 * 0.1);
      m = m * 0.9f + 0.1f * g;
      v = v * 0.999f + static_cast<float>(1 - 0.999) * (g * g);
      const float denom = std::sqrt(v) / static_cast<float>(std::sqrt(1 - std::pow(0.999, t))) + 1e-8f;
      p -= static_cast<float>(0.01 / (1 - std::pow(0.9, t))) * (m / denom);
    }
    INFO("element " << i);
    CHECK(results[0][static_cast<size_t>(i)] == Approx(p).epsilon(1e-6));
  }
}

TEST_CASE("optimizers work on nn modules and follow Module::to", "[optim]") {
  nn::Linear layer(3, 2);
  optim::AdamW opt(layer.parameters(), {.lr = 0.1});
  const Tensor x = from_vector<float>({1, 2, 3, -1, 0, 1}, {2, 3});
  const std::vector<float> before = layer.weight.to_vector<float>();
  sum(layer(x)).backward();
  opt.step();
  CHECK(layer.weight.to_vector<float>() != before);
  layer.to(kFloat64);  // converts the parameters in place: the optimizer sees the same tensors
  opt.zero_grad();
  sum(layer(x.to(kFloat64))).backward();
  opt.step();
  CHECK(layer.weight.dtype() == kFloat64);
  CHECK(opt.state_dict().at("state.0.exp_avg").dtype() == kFloat64);
  CHECK(opt.step_count(0) == 2);
}

TEST_CASE("optimizers reject bad parameters, options and gradients", "[optim]") {
  auto throws_with = [](auto&& make, const std::string& text) {
    try {
      make();
      FAIL("expected an error containing: " << text);
    } catch (const Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(text) != std::string::npos);
    }
  };
  Tensor p = param({1.0, 2.0});
  throws_with([] { optim::SGD(std::vector<Tensor>{}); }, "SGD: got an empty parameter list");
  throws_with([&] { optim::AdamW({p, p}); }, "AdamW: parameter 1 (group 0) appears more than once");
  throws_with([] { optim::Adam({arange(3)}); }, "Adam: parameter 0 (group 0) is int64");
  throws_with([] { optim::Adam({zeros({3, 2}).t()}); }, "is not contiguous");
  throws_with([&] { optim::AdamW({p}, {.beta1 = 1.0}); }, "AdamW: beta1 must be in [0, 1), got 1");
  throws_with([&] { optim::Adam({p}, {.lr = -1}); }, "Adam: lr must be >= 0");
  throws_with([&] { optim::SGD({p}, {.lr = 0.1, .nesterov = true}); },
              "SGD: nesterov needs momentum > 0 and dampening 0");
  throws_with([&] { optim::SGD({p}, {.lr = std::nan("")}); }, "SGD: lr must be >= 0, got nan");

  optim::Adam opt({p});
  p.set_grad(from_vector<float>({1, 2}));
  throws_with([&] { opt.step(); }, "Adam: parameter 0 [2] is float64 but its gradient is float32");
  p.set_grad(Tensor());
  opt.options(0).beta2 = -0.5;  // invalid edits are caught before anything changes
  throws_with([&] { opt.step(); }, "Adam: beta2 must be in [0, 1), got -0.5");
  opt.options(0).beta2 = 0.999;
  throws_with([&] { opt.set_lr(-1); }, "Adam: lr must be >= 0, got -1");
}

TEST_CASE("an Adam step rounds the bf16 copy of a weight multiplied at bf16 in its own pass, bit for bit",
          "[optim][bf16]") {
  if (!latent::testing::bf16_available()) return;
  Generator gen(31);
  // w spans several update chunks; `held` is a weight whose bf16 copy something else still holds.
  const Tensor w = randn({3 * optim::kUpdateGrain / 64 + 5, 64}, kFloat32, &gen).requires_grad_();
  const Tensor held = randn({16, 64}, kFloat32, &gen).requires_grad_();
  const Tensor x = randn({4, 64}, kFloat32, &gen);
  optim::AdamW opt({w, held}, optim::AdamWOptions{0.01});
  {
    MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
    (sum(linear(x, w)) + sum(linear(x, held))).backward();
  }
  const Tensor kept = bf16_weight(held.detach());
  const std::vector<float> kept_before = kept.to_vector<float>();
  const int64_t before = bf16_weight_stats().roundings;
  opt.step();
  CHECK(bf16_weight_stats().roundings == before + 1);  // w's copy, by the step
  CHECK(bf16_weight(w.detach()).to_vector<float>() == w.detach().to(kBFloat16).to_vector<float>());
  CHECK(bf16_weight_stats().roundings == before + 1);  // current already: w is not read again
  // The held copy keeps the old values; the next use of `held` rounds its new ones afresh.
  CHECK(kept.to_vector<float>() == kept_before);
  CHECK(bf16_weight(held.detach()).to_vector<float>() == held.detach().to(kBFloat16).to_vector<float>());
  CHECK(bf16_weight_stats().roundings == before + 2);
  CHECK(kept.to_vector<float>() != held.detach().to(kBFloat16).to_vector<float>());  // the step moved it
}

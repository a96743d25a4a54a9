// Fused softmax family, norms, losses and dropout: hand-computed values, f32/f64 agreement, gradchecks,
// agreement with references composed from primitive ops, thread-count determinism, and errors.
#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// The value of fn(inputs) and the gradients of sum(fn(inputs) * fixed random weights) w.r.t. each input.
struct Evaluated {
  Tensor value;
  std::vector<Tensor> grads;
};

Evaluated evaluate(const Fn& fn, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) leaves.push_back(t.defined() ? t.detach().clone().requires_grad_() : t);
  Evaluated result{fn(leaves), {}};
  Generator gen(99);
  sum(result.value * randn(result.value.shape(), result.value.dtype(), &gen)).backward();
  for (const Tensor& leaf : leaves) result.grads.push_back(leaf.defined() ? leaf.grad() : Tensor());
  return result;
}

// The fused op and its composed reference agree in value and in every input gradient.
void require_same_as_reference(const Fn& fused, const Fn& reference, const std::vector<Tensor>& inputs, double tol = 1e-10) {
  const Evaluated a = evaluate(fused, inputs), b = evaluate(reference, inputs);
  require_close(a.value, b.value, tol);
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    INFO("gradient of input " << i);
    REQUIRE(a.grads[i].defined());
    require_close(a.grads[i], b.grads[i], tol);
  }
}

// References written from primitive ops only.
Tensor softmax_reference(const Tensor& x, int64_t dim) {
  const Tensor e = exp(x - amax(x, {dim}, true).detach());
  return e / sum(e, {dim}, true);
}
Tensor log_softmax_reference(const Tensor& x, int64_t dim) {
  const Tensor shifted = x - amax(x, {dim}, true).detach();
  return shifted - log(sum(exp(shifted), {dim}, true));
}
Tensor layer_norm_reference(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  const Tensor centered = x - mean(x, {-1}, true);
  Tensor y = centered * rsqrt(mean(square(centered), {-1}, true) + eps);
  if (w.defined()) y = y * w;
  if (b.defined()) y = y + b;
  return y;
}
// Mean over kept rows of -log_softmax(logits)[target]; ignored rows are masked out.
Tensor cross_entropy_reference(const Tensor& logits, const std::vector<int64_t>& targets, int64_t ignore_index) {
  std::vector<int64_t> ids;
  std::vector<double> keep;
  for (int64_t t : targets) {
    ids.push_back(t == ignore_index ? 0 : t);
    keep.push_back(t == ignore_index ? 0.0 : 1.0);
  }
  const auto n = static_cast<int64_t>(targets.size());
  const Tensor picked = gather(log_softmax_reference(logits, 1), 1, from_vector(ids, {n, 1}));
  const Tensor mask = from_vector(keep, {n, 1}).to(logits.dtype());
  return -sum(picked * mask) / sum(mask).item();
}

std::vector<double> values_of(const Tensor& t) { return t.to(kFloat64).to_vector<double>(); }

}  // namespace

TEST_CASE("softmax and log_softmax match hand-computed values", "[nn_ops]") {
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor x = from_vector<double>({1, 2, 3}).to(dt);
    require_close(softmax(x, 0), {0.09003057317038046, 0.24472847105479764, 0.6652409557748219}, 1e-6);
    require_close(log_softmax(x, -1), {-2.4076059644443806, -1.4076059644443806, -0.4076059644443806}, 1e-6);
    // Shifted by the row max: no overflow at 1000.
    const Tensor big = from_vector<double>({1000, 1001, 1002}).to(dt);
    require_close(softmax(big, 0), {0.09003057317038046, 0.24472847105479764, 0.6652409557748219}, 1e-6);
    require_close(log_softmax(big, 0), {-2.4076059644443806, -1.4076059644443806, -0.4076059644443806}, 1e-6);
    // Over dim 0 of [[1, 2], [3, 4]]: each column is softmax([a, a + 2]) = [1 / (1 + e^2), e^2 / (1 + e^2)].
    const double lo = 1 / (1 + std::exp(2.0));
    require_close(softmax(from_vector<double>({1, 2, 3, 4}, {2, 2}).to(dt), 0), {lo, lo, 1 - lo, 1 - lo}, 1e-6);
  }
  require_close(softmax(scalar_tensor(5.0, kFloat64), 0), {1.0});
  for (int64_t dim : {0, 1}) {
    CHECK(softmax(zeros({2, 0}, kFloat64), dim).shape() == Shape{2, 0});
    CHECK(log_softmax(zeros({0, 3}, kFloat32), dim).shape() == Shape{0, 3});
  }
}

TEST_CASE("softmax family gradients pass gradcheck over any dim and non-contiguous inputs", "[nn_ops][gradcheck]") {
  const Tensor x = randn64({3, 4, 5}, 1);
  for (int64_t dim : {0, 1, 2, -1}) {
    INFO("dim " << dim);
    CHECK(autograd::gradcheck([dim](auto& v) { return softmax(v[0], dim); }, {x}));
    CHECK(autograd::gradcheck([dim](auto& v) { return log_softmax(v[0], dim); }, {x}));
    CHECK(autograd::gradcheck([dim](auto& v) { return softmax(v[0].transpose(0, 2), dim); }, {x}));
    CHECK(autograd::gradcheck([dim](auto& v) { return log_softmax(v[0].transpose(1, 2), dim); }, {x}));
  }
}

TEST_CASE("fused softmax family equals the composed reference in values and gradients", "[nn_ops]") {
  const Tensor x = randn64({4, 3, 6}, 2);
  for (int64_t dim : {0, 1, 2}) {
    INFO("dim " << dim);
    require_same_as_reference([dim](auto& v) { return softmax(v[0], dim); },
                              [dim](auto& v) { return softmax_reference(v[0], dim); }, {x});
    require_same_as_reference([dim](auto& v) { return log_softmax(v[0], dim); },
                              [dim](auto& v) { return log_softmax_reference(v[0], dim); }, {x});
    require_same_as_reference([dim](auto& v) { return softmax(v[0].transpose(0, 2), dim); },
                              [dim](auto& v) { return softmax_reference(v[0].transpose(0, 2), dim); }, {x});
  }
  // Reducing a non-last dim runs 32 neighbouring columns at a time: cover full and partial panels.
  const Tensor wide = randn64({3, 5, 70}, 3);
  for (int64_t dim : {0, 1}) {
    INFO("wide, dim " << dim);
    require_same_as_reference([dim](auto& v) { return softmax(v[0], dim); },
                              [dim](auto& v) { return softmax_reference(v[0], dim); }, {wide});
    require_same_as_reference([dim](auto& v) { return log_softmax(v[0], dim); },
                              [dim](auto& v) { return log_softmax_reference(v[0], dim); }, {wide});
  }
}

TEST_CASE("rms_norm and layer_norm match hand-computed values", "[nn_ops]") {
  for (DType dt : {kFloat32, kFloat64}) {
    // [3, 4]: mean square 12.5, so x / sqrt(12.5) = [0.6, 0.8] * sqrt(2).
    const Tensor x = from_vector<double>({3, 4}, {1, 2}).to(dt);
    require_close(rms_norm(x, ones({2}, dt), 0.0), {0.848528137423857, 1.131370849898476}, 1e-6);
    require_close(rms_norm(x, from_vector<double>({2, 0.5}).to(dt), 0.0), {1.697056274847714, 0.565685424949238}, 1e-6);
    // eps inside the root: x / sqrt(12.5 + 3.5) = x / 4.
    require_close(rms_norm(x, ones({2}, dt), 3.5), {0.75, 1.0}, 1e-6);
    // [1, 2, 3]: mean 2, variance 2/3, so (x - 2) * sqrt(3/2).
    const Tensor y = from_vector<double>({1, 2, 3}).to(dt);
    const double s = std::sqrt(1.5);
    require_close(layer_norm(y, Tensor(), Tensor(), 0.0), {-s, 0, s}, 1e-6);
    require_close(layer_norm(y, from_vector<double>({1, 2, 3}).to(dt), from_vector<double>({10, 20, 30}).to(dt), 0.0),
                  {10 - s, 20, 30 + 3 * s}, 1e-6);
    require_close(layer_norm(y, Tensor(), from_vector<double>({1, 1, 1}).to(dt), 0.0), {1 - s, 1, 1 + s}, 1e-6);
  }
}

TEST_CASE("norm gradients pass gradcheck, with and without affine parameters", "[nn_ops][gradcheck]") {
  const Tensor x = randn64({2, 3, 5}, 3), w = randn64({5}, 4), b = randn64({5}, 5), xt = randn64({5, 4}, 6);
  CHECK(autograd::gradcheck([](auto& v) { return rms_norm(v[0], v[1], 1e-6); }, {x, w}));
  CHECK(autograd::gradcheck([](auto& v) { return rms_norm(v[0].transpose(0, 1), v[1], 1e-6); }, {xt, randn64({5}, 7)}));
  CHECK(autograd::gradcheck([](auto& v) { return layer_norm(v[0], v[1], v[2], 1e-5); }, {x, w, b}));
  CHECK(autograd::gradcheck([](auto& v) { return layer_norm(v[0], Tensor(), Tensor(), 1e-5); }, {x}));
  CHECK(autograd::gradcheck([](auto& v) { return layer_norm(v[0], v[1], Tensor(), 1e-5); }, {x, w}));
  CHECK(autograd::gradcheck([](auto& v) { return layer_norm(v[0].transpose(0, 1), v[1], v[2], 1e-5); },
                            {xt, randn64({5}, 8), randn64({5}, 9)}));
  // Only the parameters require grad: the fused backward skips dx.
  CHECK(autograd::gradcheck([&](auto& v) { return layer_norm(x.detach(), v[0], v[1], 1e-5); }, {w, b}));
}

TEST_CASE("fused norms equal the composed reference in values and gradients", "[nn_ops]") {
  const Tensor x = randn64({3, 4, 7}, 10), w = randn64({7}, 11), b = randn64({7}, 12);
  require_same_as_reference([](auto& v) { return rms_norm(v[0], v[1], 1e-5); },
                            [](auto& v) { return v[0] * rsqrt(mean(square(v[0]), {-1}, true) + 1e-5) * v[1]; }, {x, w});
  require_same_as_reference([](auto& v) { return layer_norm(v[0], v[1], v[2], 1e-5); },
                            [](auto& v) { return layer_norm_reference(v[0], v[1], v[2], 1e-5); }, {x, w, b});
  require_same_as_reference([](auto& v) { return layer_norm(v[0].transpose(0, 2), Tensor(), Tensor(), 1e-5); },
                            [](auto& v) { return layer_norm_reference(v[0].transpose(0, 2), Tensor(), Tensor(), 1e-5); },
                            {x});
}

TEST_CASE("cross_entropy matches hand-computed values and honours ignore_index", "[nn_ops]") {
  // Row 0: -log softmax([1, 2, 3])[2] = 0.40760596...; row 1: uniform over 3 classes, log 3.
  const double row0 = 0.4076059644443806, row1 = std::log(3.0);
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor logits = from_vector<double>({1, 2, 3, 1, 1, 1}, {2, 3}).to(dt);
    const Tensor loss = cross_entropy(logits, from_vector<int64_t>({2, 0}));
    CHECK(loss.shape() == Shape{});
    CHECK(loss.dtype() == dt);
    require_close(loss, {(row0 + row1) / 2}, 1e-6);
    require_close(cross_entropy(logits, from_vector<int64_t>({2, -100})), {row0}, 1e-6);
    require_close(cross_entropy(logits, from_vector<int64_t>({2, 1}), 1), {row0}, 1e-6);  // a class id as ignore_index
    require_close(nll_loss(log_softmax(logits, 1), from_vector<int64_t>({2, 0})), {(row0 + row1) / 2}, 1e-6);
  }
  // Gradient by hand: (softmax - onehot) / kept rows, zero on the ignored row.
  const Tensor logits = from_vector<double>({1, 2, 3, 1, 1, 1}, {2, 3}).requires_grad_();
  cross_entropy(logits, from_vector<int64_t>({2, -100})).backward();
  require_close(logits.grad(), {0.09003057317038046, 0.24472847105479764, 0.6652409557748219 - 1, 0, 0, 0}, 1e-12);
}

TEST_CASE("cross_entropy with every row ignored is 0 with zero gradients", "[nn_ops]") {
  const Tensor logits = randn64({3, 4}, 13);
  const Tensor targets = from_vector<int64_t>({-100, -100, -100});
  const Tensor loss = cross_entropy(logits, targets);
  require_close(loss, {0.0}, 0);
  loss.backward();
  require_close(logits.grad(), std::vector<double>(12, 0.0), 0);
  const Tensor log_probs = randn64({3, 4}, 14);
  const Tensor nll = nll_loss(log_probs, targets);
  require_close(nll, {0.0}, 0);
  nll.backward();
  require_close(log_probs.grad(), std::vector<double>(12, 0.0), 0);
}

TEST_CASE("losses pass gradcheck and equal the composed reference", "[nn_ops][gradcheck]") {
  const Tensor logits = randn64({5, 4}, 15);
  const std::vector<int64_t> ids = {3, -100, 0, 2, 1};
  const Tensor targets = from_vector(ids);
  CHECK(autograd::gradcheck([&](auto& v) { return cross_entropy(v[0], targets); }, {logits}));
  CHECK(autograd::gradcheck([&](auto& v) { return cross_entropy(v[0].transpose(0, 1), from_vector<int64_t>({1, 0, 4, 2})); },
                            {randn64({5, 4}, 16)}));
  CHECK(autograd::gradcheck([&](auto& v) { return nll_loss(v[0], targets); }, {logits}));
  CHECK(autograd::gradcheck([&](auto& v) { return nll_loss(v[0].transpose(0, 1), from_vector<int64_t>({1, 0, 4, 2})); },
                            {randn64({5, 4}, 17)}));
  CHECK(autograd::gradcheck([](auto& v) { return mse_loss(v[0], v[1]); }, {randn64({3, 2}, 18), randn64({3, 2}, 19)}));
  require_same_as_reference([&](auto& v) { return cross_entropy(v[0], targets); },
                            [&](auto& v) { return cross_entropy_reference(v[0], ids, -100); }, {logits});
  require_same_as_reference([&](auto& v) { return nll_loss(log_softmax(v[0], 1), targets); },
                            [&](auto& v) { return cross_entropy_reference(v[0], ids, -100); }, {logits});
  require_close(mse_loss(from_vector<double>({1, 2, 3}), from_vector<double>({1, 4, 0})), {13.0 / 3});
}

TEST_CASE("f32 and f64 kernels agree", "[nn_ops]") {
  Generator gen(20);
  const Tensor x = randn({6, 9}, kFloat64, &gen), w = randn({9}, kFloat64, &gen), b = randn({9}, kFloat64, &gen);
  const Tensor targets = from_vector<int64_t>({0, 8, 3, -100, 5, 5});
  const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>>> ops = {
      {"softmax", [](auto& a, auto&, auto&) { return softmax(a, 0); }},
      {"log_softmax", [](auto& a, auto&, auto&) { return log_softmax(a, 1); }},
      {"rms_norm", [](auto& a, auto& c, auto&) { return rms_norm(a, c, 1e-6); }},
      {"layer_norm", [](auto& a, auto& c, auto& d) { return layer_norm(a, c, d, 1e-5); }},
      {"cross_entropy", [&](auto& a, auto&, auto&) { return cross_entropy(a, targets); }},
  };
  for (auto& [name, op] : ops) {
    INFO(name);
    const Tensor x32 = x.to(kFloat32).requires_grad_(), x64 = x.clone().requires_grad_();
    const Tensor y32 = op(x32, w.to(kFloat32), b.to(kFloat32)), y64 = op(x64, w, b);
    CHECK(y32.dtype() == kFloat32);
    require_close(y32, y64, 1e-5);
    sum(y32 * y32.detach()).backward();
    sum(y64 * y64.detach()).backward();
    require_close(x32.grad(), x64.grad(), 1e-4);
  }
}

TEST_CASE("fused kernels give bitwise identical results for any thread count", "[nn_ops]") {
  // 300 rows of 64: the norm backward splits the weight-gradient sum over several row chunks.
  const Tensor x = randn64({300, 64}, 21), w = randn64({64}, 22), b = randn64({64}, 23);
  const Tensor targets = randint(0, 64, {300});
  auto run = [&](int threads) {
    set_num_threads(threads);
    const Tensor xs = x.detach().clone().to(kFloat32).requires_grad_(), ws = w.detach().to(kFloat32).requires_grad_(),
                 bs = b.detach().to(kFloat32).requires_grad_();
    const Tensor loss = cross_entropy(softmax(layer_norm(xs, ws, bs, 1e-5), 0) + rms_norm(xs, ws, 1e-5), targets);
    loss.backward();
    std::vector<std::vector<float>> out = {loss.to_vector<float>(), xs.grad().to_vector<float>(),
                                           ws.grad().to_vector<float>(), bs.grad().to_vector<float>()};
    return out;
  };
  const int before = get_num_threads();
  const auto one = run(1), two = run(2);
  set_num_threads(before);
  CHECK(one == two);
}

TEST_CASE("dropout is deterministic given the generator and scales what it keeps", "[nn_ops]") {
  const Tensor x = ones({1000}, kFloat64).requires_grad_();
  Generator a(7), b(7);
  const Tensor y = dropout(x, 0.25, true, &a), same = dropout(x, 0.25, true, &b);
  CHECK(values_of(y) == values_of(same));
  CHECK(a.offset() == 1000);
  const Tensor next = dropout(x, 0.25, true, &a);  // the generator moved on: a different mask
  CHECK(values_of(next) != values_of(y));
  int64_t kept = 0;
  for (double v : values_of(y)) {
    REQUIRE((v == 0.0 || std::abs(v - 1 / 0.75) < 1e-12));
    kept += v != 0.0;
  }
  CHECK(kept > 700);
  CHECK(kept < 800);
  // The gradient passes through exactly the kept elements, with the same scale.
  y.backward(ones({1000}, kFloat64));
  CHECK(values_of(x.grad()) == values_of(y));
  Generator c(7);
  CHECK(autograd::gradcheck([](auto& v) { Generator g(3); return dropout(v[0], 0.5, true, &g); }, {randn64({4, 5}, 24)}));
  CHECK(dropout(x, 0.5, false, &c).is_same(x));
  CHECK(dropout(x, 0.0, true, &c).is_same(x));
  require_close(dropout(x, 1.0, true, &c), std::vector<double>(1000, 0.0), 0);
  CHECK_THROWS_WITH(dropout(x, 1.5, true, &c), Catch::Contains("dropout") && Catch::Contains("1.5"));
}

TEST_CASE("swiglu matches hand-computed values and stays finite at large gates", "[nn_ops][swiglu]") {
  // silu(g) * u = g / (1 + e^-g) * u.
  const double s1 = 1 / (1 + std::exp(-1.0)), s2 = 1 / (1 + std::exp(2.0));
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor g = from_vector<double>({1, -2, 0, 100, -100}).to(dt), u = from_vector<double>({2, 3, 5, 0.5, 7}).to(dt);
    require_close(swiglu(g, u), {s1 * 2, -2 * s2 * 3, 0, 50, -100 * 7 * std::exp(-100.0)}, 1e-6);
  }
  // d/dg = u s (1 + g (1 - s)), d/du = g s: at g = 1, u = 2 and at g = -2, u = 3.
  const Tensor g = from_vector<double>({1, -2}).requires_grad_(), u = from_vector<double>({2, 3}).requires_grad_();
  swiglu(g, u).backward(ones({2}, kFloat64));
  require_close(g.grad(), {2 * s1 * (1 + (1 - s1)), 3 * s2 * (1 - 2 * (1 - s2))}, 1e-12);
  require_close(u.grad(), {s1, -2 * s2}, 1e-12);
}

TEST_CASE("swiglu passes gradcheck and equals silu(gate) * up", "[nn_ops][swiglu][gradcheck]") {
  const Tensor g = randn64({3, 7}, 30), u = randn64({3, 7}, 31);
  CHECK(autograd::gradcheck([](auto& v) { return swiglu(v[0], v[1]); }, {g, u}));
  CHECK(autograd::gradcheck([](auto& v) { return swiglu(v[0].t(), v[1].t()); }, {g, u}));  // strided inputs
  require_same_as_reference([](auto& v) { return swiglu(v[0], v[1]); }, [](auto& v) { return silu(v[0]) * v[1]; },
                            {randn64({4, 33}, 32), randn64({4, 33}, 33)});
  // f32 against f64, over enough elements to cover the vectorised body and its remainder.
  const Tensor g64 = randn64({5, 37}, 34), u64 = randn64({5, 37}, 35);
  require_close(swiglu(g64.to(kFloat32), u64.to(kFloat32)), swiglu(g64, u64), 1e-5);
}

TEST_CASE("swiglu is bitwise identical for any thread count", "[nn_ops][swiglu]") {
  // Large enough to be split into several parallel chunks.
  const Tensor g = randn64({300, 257}, 36), u = randn64({300, 257}, 37);
  auto run = [&](int threads) {
    set_num_threads(threads);
    const Tensor gs = g.detach().to(kFloat32).requires_grad_(), us = u.detach().to(kFloat32).requires_grad_();
    const Tensor y = swiglu(gs, us);
    y.backward(y.detach());
    return std::vector<std::vector<float>>{y.to_vector<float>(), gs.grad().to_vector<float>(), us.grad().to_vector<float>()};
  };
  const int before = get_num_threads();
  const auto one = run(1), two = run(2);
  set_num_threads(before);
  CHECK(one == two);
}

TEST_CASE("nn ops reject bad inputs with errors naming the op", "[nn_ops]") {
  const Tensor x = randn64({2, 4}, 25);
  CHECK_THROWS_WITH(softmax(x, 2), Catch::Contains("softmax") && Catch::Contains("dim 2"));
  CHECK_THROWS_WITH(log_softmax(x, -3), Catch::Contains("log_softmax") && Catch::Contains("dim -3"));
  CHECK_THROWS_WITH(softmax(arange(3), 0), Catch::Contains("softmax") && Catch::Contains("floating"));
  CHECK_THROWS_WITH(rms_norm(x, ones({3}, kFloat64), 1e-6),
                    Catch::Contains("rms_norm") && Catch::Contains("[3]") && Catch::Contains("[2, 4]"));
  CHECK_THROWS_WITH(rms_norm(x, ones({4}, kFloat32), 1e-6), Catch::Contains("rms_norm") && Catch::Contains("float32"));
  CHECK_THROWS_WITH(rms_norm(scalar_tensor(1.0, kFloat64), ones({1}, kFloat64), 1e-6), Catch::Contains("rms_norm"));
  CHECK_THROWS_WITH(layer_norm(x, Tensor(), ones({5}, kFloat64), 1e-5),
                    Catch::Contains("layer_norm") && Catch::Contains("bias") && Catch::Contains("[5]"));
  CHECK_THROWS_WITH(cross_entropy(randn64({2, 3, 4}, 26), from_vector<int64_t>({0, 1})),
                    Catch::Contains("cross_entropy") && Catch::Contains("[2, 3, 4]"));
  CHECK_THROWS_WITH(cross_entropy(x, from_vector<double>({0, 1})),
                    Catch::Contains("cross_entropy") && Catch::Contains("int64") && Catch::Contains("float64"));
  CHECK_THROWS_WITH(cross_entropy(x, from_vector<int64_t>({0, 1, 2})),
                    Catch::Contains("cross_entropy") && Catch::Contains("[3]"));
  CHECK_THROWS_WITH(cross_entropy(x, from_vector<int64_t>({0, 4})),
                    Catch::Contains("cross_entropy") && Catch::Contains("target 4") && Catch::Contains("[0, 4)"));
  CHECK_THROWS_WITH(cross_entropy(x, from_vector<int64_t>({-1, 0})), Catch::Contains("target -1"));
  CHECK_THROWS_WITH(nll_loss(x, from_vector<int64_t>({0, 7})), Catch::Contains("nll_loss") && Catch::Contains("target 7"));
  CHECK_THROWS_WITH(mse_loss(x, randn64({4, 2}, 27)), Catch::Contains("mse_loss") && Catch::Contains("[4, 2]"));
  CHECK_THROWS_WITH(swiglu(x, randn64({4, 2}, 28)),
                    Catch::Contains("swiglu") && Catch::Contains("[2, 4]") && Catch::Contains("[4, 2]"));
  CHECK_THROWS_WITH(swiglu(x, x.to(kFloat32)), Catch::Contains("swiglu") && Catch::Contains("float32"));
  CHECK_THROWS_WITH(swiglu(arange(3), arange(3)), Catch::Contains("swiglu") && Catch::Contains("floating"));
}

// nn layers (Linear, Embedding, RMSNorm, LayerNorm, SwiGLU, Dropout): hand-computed values, parameter
// names, f64 gradchecks of inputs and parameters (gradcheck_module), dropout's train/eval behaviour and
// seeding; SkipInitGuard.
#include <thread>

#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

const autograd::GradcheckOptions kTight{.atol = 1e-6, .rtol = 1e-6};

std::vector<std::string> parameter_names(const nn::Module& m) {
  std::vector<std::string> names;
  for (const auto& [name, t] : m.named_parameters()) names.push_back(name);
  return names;
}

}  // namespace

TEST_CASE("Linear: y = x W^T + b, hand values and gradients", "[layers]") {
  nn::Linear linear(2, 3);
  CHECK(parameter_names(linear) == std::vector<std::string>{"weight", "bias"});
  CHECK(linear.weight.shape() == Shape{3, 2});
  linear.weight.copy_(from_vector<float>({1, 2, 3, 4, 5, 6}, {3, 2}));
  linear.bias.copy_(from_vector<float>({0.5f, -1, 0}));
  require_close(linear(from_vector<float>({1, -1, 2, 0}, {2, 2})), {-0.5, -2, -1, 2.5, 5, 10}, 1e-6);
  CHECK(parameter_names(nn::Linear(2, 3, false)) == std::vector<std::string>{"weight"});

  linear.to(kFloat64);
  const Tensor x = randn64({2, 3, 2}, 1);
  CHECK(autograd::gradcheck_module(linear, [&](const std::vector<Tensor>& in) { return linear(in[0]); }, {x}, kTight));
}

TEST_CASE("Embedding: rows by id, gradients accumulate for repeated ids", "[layers]") {
  nn::Embedding embedding(3, 2);
  embedding.weight.copy_(from_vector<float>({1, 2, 3, 4, 5, 6}, {3, 2}));
  const Tensor ids = from_vector<int64_t>({2, 0, 2, 1}, {2, 2});
  const Tensor y = embedding(ids);
  CHECK(y.shape() == Shape{2, 2, 2});
  require_close(y, {5, 6, 1, 2, 5, 6, 3, 4});
  sum(y).backward();
  require_close(embedding.weight.grad(), {1, 1, 1, 1, 2, 2});  // id 2 appears twice
  CHECK_THROWS_WITH(embedding(from_vector<int64_t>({3})), Catch::Contains("id 3 out of range [0, 3)"));

  embedding.to(kFloat64);
  CHECK(autograd::gradcheck_module(embedding, [&](const std::vector<Tensor>& in) { return embedding(in[0]); }, {ids},
                                   kTight));
}

TEST_CASE("RMSNorm: w * x / sqrt(mean(x^2) + eps)", "[layers]") {
  nn::RMSNorm norm(4, 1e-6);
  CHECK(parameter_names(norm) == std::vector<std::string>{"weight"});
  norm.weight.copy_(from_vector<float>({1, 2, 1, 2}));
  // torch: x / sqrt((x*x).mean() + 1e-6) * w in float64.
  require_close(norm(from_vector<float>({1, 2, 3, 4}, {1, 4})),
                {0.3651483473268884, 1.4605933893075536, 1.0954450419806652, 2.921186778615107}, 1e-6);

  norm.to(kFloat64);
  const Tensor x = randn64({3, 4}, 2);
  CHECK(autograd::gradcheck_module(norm, [&](const std::vector<Tensor>& in) { return norm(in[0]); }, {x}, kTight));
}

TEST_CASE("LayerNorm: (x - mean) / sqrt(var + eps) * w + b", "[layers]") {
  nn::LayerNorm norm(4);
  CHECK(parameter_names(norm) == std::vector<std::string>{"weight", "bias"});
  CHECK(parameter_names(nn::LayerNorm(4, 1e-5, false)).empty());
  norm.weight.copy_(from_vector<float>({1, 2, 1, 2}));
  norm.bias.copy_(from_vector<float>({0.5f, 0, 0, -0.5f}));
  // torch.nn.functional.layer_norm(x, (4,), w, b, 1e-5) in float64.
  require_close(norm(from_vector<float>({1, 2, 3, 4})),
                {-0.8416354199689271, -0.8944236133126182, 0.4472118066563089, 2.1832708399378538}, 1e-6);
  CHECK_THROWS_WITH(norm(zeros({2, 3})), Catch::Contains("[2, 3]") && Catch::Contains("4"));

  norm.to(kFloat64);
  const Tensor x = randn64({2, 4}, 3);
  CHECK(autograd::gradcheck_module(norm, [&](const std::vector<Tensor>& in) { return norm(in[0]); }, {x}, kTight));
}

TEST_CASE("SwiGLU: down_proj(silu(gate_proj(x)) * up_proj(x))", "[layers]") {
  nn::SwiGLU mlp(1, 2);
  CHECK(parameter_names(mlp) == std::vector<std::string>{"gate_proj.weight", "up_proj.weight", "down_proj.weight"});
  mlp.gate_proj->weight.copy_(from_vector<float>({1, 2}, {2, 1}));
  mlp.up_proj->weight.copy_(from_vector<float>({3, -1}, {2, 1}));
  mlp.down_proj->weight.copy_(from_vector<float>({1, 1}, {1, 2}));
  // silu(v) = v / (1 + exp(-v)): silu(0.5) * 1.5 + silu(1) * (-0.5), in Python.
  require_close(mlp(from_vector<float>({0.5f}, {1, 1})), {0.10131520908638852}, 1e-6);

  nn::SwiGLU wide(4, 6);
  wide.to(kFloat64);
  const Tensor x = randn64({2, 4}, 4);
  CHECK(autograd::gradcheck_module(wide, [&](const std::vector<Tensor>& in) { return wide(in[0]); }, {x}, kTight));
}

TEST_CASE("Dropout: identity in eval; in training zeroes about p and scales by 1/(1-p)", "[layers]") {
  const double p = 0.3;
  nn::Dropout dropout(p, std::make_shared<Generator>(42));
  CHECK(dropout.named_parameters().empty());
  const Tensor x = full({200, 500}, 2.0, kFloat64).requires_grad_();

  dropout.eval();
  const Tensor same = dropout(x);
  CHECK(same.to_vector<double>() == x.to_vector<double>());

  dropout.train();
  const Tensor y = dropout(x);
  const std::vector<double> values = y.to_vector<double>();
  int64_t zeros_count = 0;
  for (double value : values) {
    if (value == 0)
      ++zeros_count;
    else
      REQUIRE(value == Approx(2.0 / (1 - p)).epsilon(1e-15));
  }
  // 100,000 Bernoulli(0.3) draws: standard deviation 145, so 1% (1,000) is about 7 sigma.
  CHECK(std::abs(static_cast<double>(zeros_count) / static_cast<double>(values.size()) - p) < 0.01);
  // The gradient passes through the same mask with the same scale: dy/dx = y / x elementwise.
  sum(y).backward();
  require_close(x.grad(), (y / 2.0).detach().to_vector<double>(), 1e-15);

  // Same seed, same masks; the next call draws a new mask; another seed draws another.
  nn::Dropout again(p, std::make_shared<Generator>(42)), other(p, std::make_shared<Generator>(43));
  CHECK(again(x).to_vector<double>() == values);
  CHECK(again(x).to_vector<double>() != values);
  CHECK(other(x).to_vector<double>() != values);

  CHECK(nn::Dropout(0.0)(x).to_vector<double>() == x.to_vector<double>());
  CHECK_THROWS_WITH(nn::Dropout(1.5), Catch::Contains("Dropout: p must be in [0, 1], got 1.5"));
}

TEST_CASE("SkipInitGuard makes the random initialisers fill zeros without drawing, on this thread only",
          "[nn][init]") {
  manual_seed(3);
  const uint64_t offset = default_generator().offset();
  {
    const nn::init::SkipInitGuard skip;
    {
      const nn::init::SkipInitGuard nested;
    }
    CHECK(nn::init::init_skipped());  // the nested guard restored, not cleared
    nn::Linear linear(4, 3);          // kaiming_uniform_ weight, uniform_ bias
    nn::Embedding embedding(5, 2);    // normal_
    CHECK(linear.weight.to_vector<float>() == std::vector<float>(12, 0.0f));
    CHECK(linear.bias.to_vector<float>() == std::vector<float>(3, 0.0f));
    CHECK(embedding.weight.to_vector<float>() == std::vector<float>(10, 0.0f));
    CHECK(default_generator().offset() == offset);
    bool other_thread_skips = true;
    std::thread([&] { other_thread_skips = nn::init::init_skipped(); }).join();
    CHECK_FALSE(other_thread_skips);
  }
  CHECK_FALSE(nn::init::init_skipped());
  // Afterwards the draws are the ones a fresh seed gives: the guard consumed nothing.
  nn::Linear after(4, 3);
  manual_seed(3);
  nn::Linear fresh(4, 3);
  CHECK(after.weight.to_vector<float>() == fresh.weight.to_vector<float>());
  CHECK(after.weight.to_vector<float>() != std::vector<float>(12, 0.0f));
}

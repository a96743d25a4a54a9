// Tutorial: extending latent from your own code — a differentiable op with a hand-written backward,
// a module built on it, gradient checks for both, and a short training run that uses them.
//
// In the latent tree:   ninja -C build examples/latent-custom-layer && build/examples/latent-custom-layer
// Against an install:   g++ -std=c++20 -O2 custom_layer.cpp $(pkg-config --cflags --libs latent)
#include <latent/latent.hpp>

#include <cmath>
#include <exception>
#include <memory>
#include <vector>

using namespace latent;

// ---------------------------------------------------------------------------------------------
// Step 1: the op. LearnedSwish is a gated activation whose slope is learned, one per feature:
//
//   y = x * sigmoid(alpha * x)        x: [..., features], alpha: [features]
//
// With s = sigmoid(alpha * x), s' = s * (1 - s) and g the gradient arriving at y:
//
//   dL/dx     = g * (s + alpha * x * s')
//   dL/dalpha = sum over the leading dims of g * x^2 * s'
//
// Derive from autograd::Function<YourOp> and write two static functions; YourOp::apply(...) runs
// forward and, when an input requires grad, records a graph node that calls your backward.
// ---------------------------------------------------------------------------------------------
struct LearnedSwish : autograd::Function<LearnedSwish> {
  static Tensor forward(autograd::AutogradContext* ctx, const Tensor& x, const Tensor& alpha) {
    // Check shapes up front and say exactly what is wrong, as latent's own ops do.
    if (alpha.dim() != 1 || x.dim() == 0 || x.size(-1) != alpha.size(0))
      fail("LearnedSwish: x {} needs alpha of shape [{}], got {}", shape_str(x.shape()),
           x.dim() == 0 ? std::string("features") : fmt::format("{}", x.size(-1)), shape_str(alpha.shape()));
    // forward runs with grad mode off, so these ops build no graph of their own: backward below
    // is the only derivative latent will use for this op.
    Tensor s = sigmoid(alpha * x);
    ctx->save_for_backward({x, alpha, s});  // what backward needs, nothing more
    return x * s;
  }

  // One incoming gradient per output; one gradient per forward argument back (undefined = none).
  static std::vector<Tensor> backward(autograd::AutogradContext* ctx, std::vector<Tensor> grad_outputs) {
    const Tensor& g = grad_outputs[0];
    const std::vector<Tensor>& saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &alpha = saved[1], &s = saved[2];
    const Tensor s_prime = s * (1.0 - s);

    Tensor grad_x, grad_alpha;
    if (ctx->needs_input_grad(0)) grad_x = g * (s + alpha * x * s_prime);
    // alpha was broadcast over the batch in forward, so its gradient is summed back to [features].
    if (ctx->needs_input_grad(1)) grad_alpha = sum_to(g * x * x * s_prime, alpha.shape());
    return {grad_x, grad_alpha};
  }
};

// ---------------------------------------------------------------------------------------------
// Step 2: a layer. GatedMLP = Linear -> LearnedSwish -> Linear. Everything is registered by name
// in the constructor, so named_parameters() and state_dict() call the tensors "fc1.weight",
// "fc1.bias", "alpha", "fc2.weight", "fc2.bias" — and zero_grad(), to(kFloat64) and checkpoints
// work with no further code. Deriving from nn::Callable<GatedMLP> makes `model(x)` run forward with
// the module's name attached to anomaly-mode errors (nn/module.hpp).
// ---------------------------------------------------------------------------------------------
class GatedMLP : public nn::Callable<GatedMLP> {
 public:
  GatedMLP(int64_t in_features, int64_t hidden_features, int64_t out_features)
      : fc1(register_module("fc1", std::make_shared<nn::Linear>(in_features, hidden_features))),
        alpha(register_parameter("alpha", ones({hidden_features}))),  // starts as SiLU: x * sigmoid(x)
        fc2(register_module("fc2", std::make_shared<nn::Linear>(hidden_features, out_features))) {}

  Tensor forward(const Tensor& x) const { return (*fc2)(LearnedSwish::apply((*fc1)(x), alpha)); }

  std::shared_ptr<nn::Linear> fc1;
  Tensor alpha;  // a handle on the registered parameter: same data, same gradient
  std::shared_ptr<nn::Linear> fc2;
};

// ---------------------------------------------------------------------------------------------
// Step 3: check the gradients. gradcheck compares the analytic gradient (your backward) with
// central differences, in float64; it returns true or throws latent::Error naming the input, the
// element and both values.
// ---------------------------------------------------------------------------------------------
void check_gradients() {
  Generator gen(7);  // a private generator: the checks do not disturb the training run's seed

  // The op alone, with a batch of 4 so that the reduction of alpha's gradient is exercised.
  Tensor x = randn({4, 3}, kFloat64, &gen).requires_grad_();
  Tensor alpha = randn({3}, kFloat64, &gen).requires_grad_();
  autograd::gradcheck([](const std::vector<Tensor>& in) { return LearnedSwish::apply(in[0], in[1]); }, {x, alpha});
  fmt::print("gradcheck LearnedSwish (x and alpha): ok\n");

  // The module, converted to float64, with respect to its parameters (fc1, alpha, fc2: perturbed in
  // place) and its input: this checks how the op is wired between the two Linear layers.
  GatedMLP module(3, 5, 2);
  module.to(kFloat64);
  Tensor input = randn({6, 3}, kFloat64, &gen).requires_grad_();
  autograd::gradcheck_module(module, [&](const std::vector<Tensor>& in) { return module(in[0]); }, {input});
  fmt::print("gradcheck GatedMLP (parameters, input): ok\n");
}

// ---------------------------------------------------------------------------------------------
// Step 4: train. Fit y = sin(x) on [-3, 3] with full-batch gradient descent written out by hand:
// forward, loss, backward, then p -= lr * grad for every parameter (optim::SGD and optim::AdamW do
// this for you, with momentum, weight decay and state you can save). Returns first loss / last loss.
// ---------------------------------------------------------------------------------------------
double fit_sine() {
  manual_seed(0);  // Linear initialisation draws from the global generator
  GatedMLP model(1, 32, 1);

  // The data: 256 evenly spaced points, as [batch, features] = [256, 1].
  const int64_t n = 256;
  std::vector<float> xs(n), ys(n);
  for (int64_t i = 0; i < n; ++i) {
    xs[i] = -3.0f + 6.0f * static_cast<float>(i) / (n - 1);
    ys[i] = std::sin(xs[i]);
  }
  const Tensor x = from_vector(xs, {n, 1}), target = from_vector(ys, {n, 1});

  const double lr = 0.1;
  const int steps = 400;
  std::vector<Tensor> params = model.parameters();
  double first_loss = 0.0, last_loss = 0.0;
  for (int step = 0; step < steps; ++step) {
    Tensor loss = mse_loss(model(x), target);
    loss.backward();
    {
      NoGradGuard no_grad;  // the update is not part of the model: record no graph for it
      for (Tensor& p : params) p.copy_(p - lr * p.grad());
    }
    model.zero_grad();  // gradients accumulate across backward calls; start the next step from none

    last_loss = loss.item();
    if (step == 0) first_loss = last_loss;
    if (step % 50 == 0 || step == steps - 1) fmt::print("step {:4d}  loss {:.6f}\n", step, last_loss);
  }
  fmt::print("learned alpha: {}\n", model.alpha);
  return first_loss / last_loss;
}

int main() {
  try {
    check_gradients();
    const double improvement = fit_sine();
    // A working op and module fit this curve easily; anything less than 10x means something broke.
    if (!(improvement > 10.0)) {
      fmt::print(stderr, "custom_layer: loss fell only {:.2f}x, expected more than 10x\n", improvement);
      return 1;
    }
    fmt::print("loss fell {:.0f}x\n", improvement);
    return 0;
  } catch (const std::exception& e) {  // gradcheck disagreements and shape errors arrive here
    fmt::print(stderr, "custom_layer: {}\n", e.what());
    return 1;
  }
}

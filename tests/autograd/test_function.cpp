// The custom-op API (Function / AutogradContext) and gradcheck itself: user ops with non-tensor
// arguments and several outputs, saved state, misuse errors, a throwing backward named, and gradcheck
// catching a wrong backward.
#include <regex>

#include "../helpers.hpp"

using namespace latent;
using latent::autograd::AutogradContext;
using latent::autograd::Function;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

// y = tanh(scale * x); dy/dx = scale * (1 - y^2). Saves its output and a non-tensor argument.
struct ScaledTanh : Function<ScaledTanh> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, double scale) {
    Tensor y = tanh(x * scale);
    ctx->save_for_backward({y});
    ctx->saved_data["scale"] = scale;
    return y;
  }
  static std::vector<Tensor> backward(AutogradContext* ctx, std::vector<Tensor> grad_outputs) {
    const Tensor y = ctx->get_saved_variables()[0];
    const double scale = std::any_cast<double>(ctx->saved_data["scale"]);
    return {grad_outputs[0] * (1.0 - y * y) * scale, Tensor()};  // one per forward argument
  }
};

// Two outputs from two inputs: (a * b, a + k * b), with an integer argument between the tensors.
// Returns one gradient per tensor argument (the other accepted form), and records needs_input_grad.
struct ProductAndSum : Function<ProductAndSum> {
  static inline std::vector<bool> seen_needs;
  static std::vector<Tensor> forward(AutogradContext* ctx, const Tensor& a, int64_t k, const Tensor& b) {
    seen_needs = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    ctx->save_for_backward({a, b});
    ctx->saved_data["k"] = k;
    return {a * b, a + b * static_cast<double>(k)};
  }
  static std::vector<Tensor> backward(AutogradContext* ctx, std::vector<Tensor> grad_outputs) {
    const Tensor a = ctx->get_saved_variables()[0], b = ctx->get_saved_variables()[1];
    const double k = static_cast<double>(std::any_cast<int64_t>(ctx->saved_data["k"]));
    const Tensor& d_prod = grad_outputs[0];
    const Tensor& d_sum = grad_outputs[1];
    return {ctx->needs_input_grad(0) ? d_prod * b + d_sum : Tensor(),
            ctx->needs_input_grad(1) ? d_prod * a + d_sum * k : Tensor()};
  }
};

struct WrongCount : Function<WrongCount> {
  static Tensor forward(AutogradContext*, const Tensor& x, const Tensor& y) { return x + y; }
  static std::vector<Tensor> backward(AutogradContext*, std::vector<Tensor> g) { return {g[0], g[0], g[0]}; }
};

struct WrongShape : Function<WrongShape> {
  static Tensor forward(AutogradContext*, const Tensor& x) { return sum(x); }
  static std::vector<Tensor> backward(AutogradContext*, std::vector<Tensor> g) { return {g[0]}; }  // [] for [3]
};

struct WrongDtype : Function<WrongDtype> {
  static Tensor forward(AutogradContext*, const Tensor& x) { return x * 2.0; }
  static std::vector<Tensor> backward(AutogradContext*, std::vector<Tensor> g) { return {g[0].to(kFloat32)}; }
};

// d/dx x^2 is 2x; this backward forgets the 2.
struct ForgetfulSquare : Function<ForgetfulSquare> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x) {
    ctx->save_for_backward({x});
    return x * x;
  }
  static std::vector<Tensor> backward(AutogradContext* ctx, std::vector<Tensor> g) {
    return {g[0] * ctx->get_saved_variables()[0]};
  }
};

// A backward that fails the way user code does: an exception from deep inside it.
struct ThrowingBackward : Function<ThrowingBackward> {
  static Tensor forward(AutogradContext*, const Tensor& x) { return x * 3.0; }
  static std::vector<Tensor> backward(AutogradContext* ctx, std::vector<Tensor>) {
    (void)std::any_cast<double>(ctx->saved_data.at("scale"));  // never saved: std::out_of_range
    return {};
  }
};

}  // namespace

TEST_CASE("a user-defined op with a non-tensor argument computes values and gradients", "[function]") {
  const Tensor x = from_vector<double>({-1.0, 0.0, 0.5}).requires_grad_();
  const Tensor y = ScaledTanh::apply(x, 2.0);
  require_close(y, {std::tanh(-2.0), 0.0, std::tanh(1.0)}, 1e-12);
  CHECK(y.requires_grad());
  CHECK_FALSE(y.is_leaf());
  sum(y).backward();
  require_close(x.grad(), {2 * (1 - std::pow(std::tanh(-2.0), 2)), 2.0, 2 * (1 - std::pow(std::tanh(1.0), 2))}, 1e-12);
  CHECK(autograd::gradcheck([](auto& v) { return ScaledTanh::apply(v[0], 0.7); }, {randn64({3, 4}, 1)}));
  // Composes with library ops on both sides, strided inputs included.
  CHECK(autograd::gradcheck(
      [](auto& v) { return exp(ScaledTanh::apply(v[0].transpose(0, 1), -1.5)) * v[0].transpose(0, 1); },
      {randn64({3, 4}, 2)}));
}

TEST_CASE("a two-output op passes gradcheck and sees needs_input_grad", "[function]") {
  const Tensor a = randn64({2, 3}, 3), b = randn64({2, 3}, 4);
  CHECK(autograd::gradcheck(
      [](auto& v) {
        const std::vector<Tensor> out = ProductAndSum::apply(v[0], int64_t{3}, v[1]);
        return cat({out[0], out[1] * 2.0}, 0);
      },
      {a, b}));
  (void)ProductAndSum::apply(a, int64_t{3}, b);  // gradcheck's last calls run without grad mode
  CHECK(ProductAndSum::seen_needs == std::vector<bool>{true, true});
  // Only b needs a gradient; only the second output is used (the first gets zeros).
  const Tensor fixed = from_vector<double>({1, 2});
  const Tensor w = from_vector<double>({3, 4}).requires_grad_();
  const std::vector<Tensor> out = ProductAndSum::apply(fixed, int64_t{5}, w);
  CHECK(ProductAndSum::seen_needs == std::vector<bool>{false, true});
  REQUIRE(out.size() == 2);
  require_close(out[0], {3, 8});
  require_close(out[1], {16, 22});
  sum(out[1]).backward();
  require_close(w.grad(), {5, 5});
  // Nothing requires grad, or grad mode is off: no graph, and needs_input_grad says so.
  const std::vector<Tensor> plain = ProductAndSum::apply(fixed, int64_t{1}, fixed);
  CHECK_FALSE(plain[0].requires_grad());
  {
    NoGradGuard no_grad;
    const std::vector<Tensor> off = ProductAndSum::apply(w, int64_t{1}, w);
    CHECK_FALSE(off[1].requires_grad());
    CHECK(ProductAndSum::seen_needs == std::vector<bool>{false, false});
  }
}

TEST_CASE("saved state is freed after backward, and a Function that saves its output does not leak", "[function]") {
  const int64_t n = 1 << 16;
  const Tensor x = randn64({n}, 5);
  const int64_t base = allocator::stats().bytes_in_use;
  {
    const Tensor y = ScaledTanh::apply(x, 1.0);  // the context holds y's data; y's node holds the context
    CHECK(allocator::stats().bytes_in_use > base);
  }
  // No reference cycle: the output, its node and the saved copy are all gone.
  CHECK(allocator::stats().bytes_in_use == base);
  const Tensor y = ScaledTanh::apply(x, 1.0);
  sum(y).backward();
  // A second backward reaches the freed context and says what to do.
  CHECK_THROWS_WITH(sum(y).backward(), Catch::Contains("freed") && Catch::Contains("retain_graph"));
}

TEST_CASE("a backward returning the wrong number, shape or dtype of gradients throws", "[function]") {
  const Tensor x = randn64({3}, 6), y = randn64({3}, 7);
  CHECK_THROWS_WITH(sum(WrongCount::apply(x, y)).backward(),
                    Catch::Contains("WrongCount") && Catch::Contains("returned 3 gradients for 2"));
  CHECK_THROWS_WITH(WrongShape::apply(x).backward(), Catch::Contains("WrongShape") && Catch::Contains("shape []") &&
                                                         Catch::Contains("input 0 of shape [3]"));
  CHECK_THROWS_WITH(sum(WrongDtype::apply(x)).backward(),
                    Catch::Contains("WrongDtype") && Catch::Contains("float32") && Catch::Contains("float64"));
}

TEST_CASE("an exception thrown by a custom backward is re-thrown naming the op", "[function]") {
  const Tensor x = randn64({3}, 9);
  std::string message;
  try {
    sum(ThrowingBackward::apply(x)).backward();
  } catch (const Error& e) {
    message = e.what();
  }
  INFO(message);
  CHECK(message.rfind("ThrowingBackward backward: ", 0) == 0);
  CHECK(message.size() > std::string("ThrowingBackward backward: ").size());  // the original message follows
}

TEST_CASE("gradcheck catches a wrong backward and names the input, element and both values", "[function][gradcheck]") {
  // Element 0 is 0, where the wrong and right gradients agree; element 1 is the first to differ.
  const Tensor ok = randn64({3}, 8);
  const Tensor x = from_vector<double>({0.0, 1.5, -0.5}).requires_grad_();
  std::string message;
  try {
    autograd::gradcheck([](auto& v) { return v[0] * 2.0 + ForgetfulSquare::apply(v[1]); }, {ok, x});
  } catch (const Error& e) {
    message = e.what();
  }
  INFO(message);
  const std::regex pattern(R"(gradcheck\(function\): input 1 element 1 \[1\]: analytic (\S+) vs numerical (\S+))");
  std::smatch match;
  REQUIRE(std::regex_search(message, match, pattern));
  const double analytic = std::stod(match[1]), numerical = std::stod(match[2]);
  // The forgetful backward is exactly half the true derivative.
  CHECK(numerical == Approx(2 * analytic).epsilon(1e-6));
  CHECK(analytic != 0);
  // A correct op passes; an input that does not require grad is skipped; no checked input is an error.
  CHECK(autograd::gradcheck([](auto& v) { return v[0] * v[0]; }, {x}));
  CHECK(autograd::gradcheck([](auto& v) { return v[0] * v[1]; }, {x, x.detach()}));
  CHECK_THROWS_WITH(autograd::gradcheck([](auto& v) { return v[0] * 2.0; }, {x.detach()}),
                    Catch::Contains("no input requires grad"));
  // fn must compute in f64 (f32 round-off would drown the central differences).
  CHECK_THROWS_WITH(autograd::gradcheck([](auto& v) { return v[0].to(kFloat32); }, {x}), Catch::Contains("float64"));
  // Tolerances are honoured: with rtol above the factor-2 error the forgetful op passes.
  CHECK(autograd::gradcheck([](auto& v) { return ForgetfulSquare::apply(v[0]); }, {x}, {1e-6, 1e-5, 1.5}));
}

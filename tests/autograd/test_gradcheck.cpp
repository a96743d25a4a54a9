// gradcheck's own contract: tensors fn reaches directly (module parameters) are checked, a wrong
// gradient anywhere fails with a message naming it, and a check that would check nothing refuses.
#include <regex>

#include "../helpers.hpp"

using namespace latent;
using latent::autograd::AutogradContext;
using latent::autograd::Function;
using latent::autograd::GradcheckOptions;
using latent::testing::randn64;

namespace {

// y = x * s (s broadcast over rows). The gradient for x is right; the one for s is half the truth,
// so only a check that reaches the parameter can catch it.
struct HalfScaleGrad : Function<HalfScaleGrad> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& s) {
    ctx->save_for_backward({x, s});
    return x * s;
  }
  static std::vector<Tensor> backward(AutogradContext* ctx, std::vector<Tensor> g) {
    const Tensor x = ctx->get_saved_variables()[0], s = ctx->get_saved_variables()[1];
    return {g[0] * s, sum(g[0] * x, {0}) * 0.5};
  }
};

class Scale : public nn::Module {
 public:
  Scale() { scale = register_parameter("scale", from_vector<double>({1.5, -0.5, 2.0})); }
  Tensor forward(const Tensor& x) const { return HalfScaleGrad::apply(x, scale); }
  Tensor scale;
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("gradcheck over a module's parameters catches a wrong parameter gradient", "[gradcheck]") {
  Scale module;
  const Tensor x = randn64({4, 3}, 1).detach();  // the input needs no gradient: only the parameter is checked
  auto fn = [&](const std::vector<Tensor>&) { return module.forward(x); };
  // The parameters handed over as inputs, read by fn through the module (perturbed in place).
  const std::string plain = message_of([&] { autograd::gradcheck(fn, module.parameters()); });
  CHECK_THAT(plain, Catch::Contains("gradcheck(function): input 0 element 0 [0]: analytic"));
  // The supported path names the module and the parameter.
  const std::string via_module = message_of([&] { autograd::gradcheck_module(module, fn, {}); });
  INFO(via_module);
  const std::regex pattern(R"(gradcheck\(Scale\): parameter 'scale' element 0 \[0\]: analytic (\S+) vs numerical (\S+) )"
                           R"(\(tolerance atol 1e-05 \+ rtol 0\.001 \* \|numerical\|, eps 1e-06\); 3 of 3 checked )"
                           R"(elements are off)");
  std::smatch match;
  REQUIRE(std::regex_search(via_module, match, pattern));
  // ds_j = sum_i w_ij x_ij; the wrong backward reports half of it.
  CHECK(std::stod(match[2]) == Approx(2 * std::stod(match[1])).epsilon(1e-6));
  // The input's gradient is right, so a check of the input alone passes.
  const Tensor xg = randn64({4, 3}, 2);
  CHECK(autograd::gradcheck([&](const std::vector<Tensor>& in) { return module.forward(in[0]); }, {xg}));
}

TEST_CASE("gradcheck_module checks inputs and parameters and leaves them as they were", "[gradcheck]") {
  nn::Linear linear(3, 2);
  linear.to(kFloat64);
  const Tensor x = randn64({4, 3}, 3);
  sum(linear(x)).backward();  // grads from an earlier step must survive the check
  const std::vector<double> weight = linear.weight.to_vector<double>(), weight_grad = linear.weight.grad().to_vector<double>();
  const std::vector<double> input = x.to_vector<double>(), input_grad = x.grad().to_vector<double>();
  CHECK(autograd::gradcheck_module(linear, [&](const std::vector<Tensor>& in) { return linear(in[0]); }, {x}));
  CHECK(linear.weight.to_vector<double>() == weight);
  CHECK(linear.weight.grad().to_vector<double>() == weight_grad);
  CHECK(x.to_vector<double>() == input);
  CHECK(x.grad().to_vector<double>() == input_grad);
  // Frozen parameters are not checked; a module whose parameters are all frozen, with no input
  // requiring grad, has nothing to check.
  linear.weight.requires_grad_(false);
  linear.bias.requires_grad_(false);
  CHECK_THROWS_WITH(
      autograd::gradcheck_module(linear, [&](const std::vector<Tensor>& in) { return linear(in[0]); }, {x.detach()}),
      Catch::Contains("gradcheck(Linear): no input requires grad"));
}

TEST_CASE("gradcheck refuses checks that would check nothing", "[gradcheck]") {
  const Tensor x = randn64({3}, 4);
  CHECK_THROWS_WITH(autograd::gradcheck([](auto& v) { return v[0] * 2.0; }, {x.detach()}),
                    Catch::Contains("no input requires grad"));
  CHECK_THROWS_WITH(autograd::gradcheck([](auto& v) { return v[0] * 2.0; }, {}), Catch::Contains("no input requires grad"));
  // The output ignores every checked tensor (here: parameters of a module fn never calls).
  Scale unused;
  const Tensor y = randn64({2, 3}, 5).detach();
  CHECK_THROWS_WITH(autograd::gradcheck([&](auto&) { return y * 2.0; }, unused.parameters()),
                    Catch::Contains("does not depend on any tensor being checked"));
}

TEST_CASE("a float32 module is refused with the call that fixes it", "[gradcheck]") {
  nn::Linear linear(3, 2);  // float32
  const Tensor x = randn64({4, 3}, 6);
  auto fn = [&](const std::vector<Tensor>& in) { return linear(in[0]); };
  CHECK_THROWS_WITH(autograd::gradcheck_module(linear, fn, {x}),
                    Catch::Contains("gradcheck(Linear): parameter 'weight' is float32") &&
                        Catch::Contains("to(kFloat64)"));
  // Its float32 parameters handed to gradcheck directly: their float64 copies would go unread.
  CHECK_THROWS_WITH(autograd::gradcheck([&](auto&) { return linear(x.detach().to(kFloat32)).to(kFloat64); },
                                        linear.parameters()),
                    Catch::Contains("input 0 (float32 [2, 3]) is reached by fn directly") &&
                        Catch::Contains("to(kFloat64)"));
  // float64 input into a float32 module: the check says which call to make.
  CHECK_THROWS_WITH(autograd::gradcheck(fn, {x}), Catch::Contains("to(kFloat64)"));
  // Converted, it passes.
  linear.to(kFloat64);
  CHECK(autograd::gradcheck_module(linear, fn, {x}));
}

TEST_CASE("gradcheck names a given function and counts the bad elements; max_per_input samples", "[gradcheck]") {
  const Tensor x = from_vector<double>({0.5, 1.0, -2.0, 3.0}).requires_grad_();
  Scale module;
  GradcheckOptions options;
  options.name = "scaled rows";
  const std::string message = message_of([&] {
    autograd::gradcheck([&](auto& v) { return module.forward(v[0].reshape({4, 1}).expand({4, 3})); },
                        {x, module.scale}, options);
  });
  CHECK_THAT(message, Catch::StartsWith("gradcheck(scaled rows): input 1 element 0 [0]") &&
                          Catch::Contains("3 of 7 checked elements are off"));
  // At most 2 evenly spaced elements of the 3-element parameter: elements 0 and 2.
  Scale bad;
  const Tensor wide = randn64({4, 3}, 7).detach();
  auto fn = [&](const std::vector<Tensor>&) { return bad.forward(wide); };
  CHECK_THAT(message_of([&] { autograd::gradcheck_module(bad, fn, {}, {.max_per_input = 2}); }),
             Catch::Contains("2 of 2 checked elements are off"));
  // The tolerance is the one applied: above the factor-2 error, the same check passes.
  CHECK(autograd::gradcheck_module(bad, fn, {}, {.rtol = 0.6}));
}

// Anomaly mode: the first NaN/Inf of a forward or backward is reported with the op, the tensor and
// the module path; intentional infinities and views pass; with the mode off values just propagate.
#include <cmath>
#include <limits>
#include <thread>

#include "../helpers.hpp"

using namespace latent;
using autograd::AutogradContext;
using autograd::DetectAnomalyGuard;

namespace anomaly_test {

// y = 2x, whose backward returns NaN: a broken user op, as anomaly mode is meant to find.
struct NanGradient : autograd::Function<NanGradient> {
  static Tensor forward(AutogradContext*, const Tensor& x) { return x * 2.0; }
  static std::vector<Tensor> backward(AutogradContext*, std::vector<Tensor> grads) {
    return {grads[0] * std::numeric_limits<double>::quiet_NaN()};
  }
};

// Divides by zero: the op inside the forward that makes Inf is the one reported.
struct DivideByZero : autograd::Function<DivideByZero> {
  static Tensor forward(AutogradContext*, const Tensor& x) { return x / 0.0; }
  static std::vector<Tensor> backward(AutogradContext*, std::vector<Tensor> grads) { return {grads[0]}; }
};

// Writes Inf with a hand-written kernel (no op): the Function itself is reported.
struct HandWrittenInf : autograd::Function<HandWrittenInf> {
  static Tensor forward(AutogradContext*, const Tensor& x) {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    y.fill_(1.0);
    y.data<double>()[1] = std::numeric_limits<double>::infinity();
    return y;
  }
  static std::vector<Tensor> backward(AutogradContext*, std::vector<Tensor> grads) { return {grads[0]}; }
};

struct Block : nn::Callable<Block> {
  Block() { fc = register_module("fc", std::make_shared<nn::Linear>(3, 3)); }
  Tensor forward(const Tensor& x, bool broken_backward) const {
    const Tensor h = (*fc)(x);
    return broken_backward ? NanGradient::apply(h) : relu(h);
  }
  std::shared_ptr<nn::Linear> fc;
};

struct Net : nn::Callable<Net> {
  Net() {
    blocks = register_module("blocks", std::make_shared<nn::ModuleList>());
    for (int i = 0; i < 3; ++i) blocks->push_back(std::make_shared<Block>());
  }
  // Block `broken` (if any) gets the broken backward; the root then takes log(x + shift).
  Tensor forward(const Tensor& x, int broken = -1, double shift = 1.0) const {
    Tensor h = x;
    for (size_t i = 0; i < blocks->size(); ++i) h = (*blocks->at<Block>(i))(h, static_cast<int>(i) == broken);
    return log(h + shift);
  }
  std::shared_ptr<nn::ModuleList> blocks;
};

}  // namespace anomaly_test

using anomaly_test::Net;

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor values(std::vector<double> v, const Shape& shape) { return from_vector(v, shape); }
}  // namespace

TEST_CASE("anomaly guard turns the mode on, nests and restores the previous state", "[anomaly]") {
  REQUIRE_FALSE(autograd::is_anomaly_enabled());
  {
    DetectAnomalyGuard on;
    REQUIRE(autograd::is_anomaly_enabled());
    {
      DetectAnomalyGuard off(false);
      REQUIRE_FALSE(autograd::is_anomaly_enabled());
    }
    REQUIRE(autograd::is_anomaly_enabled());
  }
  REQUIRE_FALSE(autograd::is_anomaly_enabled());
  autograd::set_detect_anomaly(true);
  {
    DetectAnomalyGuard off(false);
    REQUIRE_FALSE(autograd::is_anomaly_enabled());
  }
  REQUIRE(autograd::is_anomaly_enabled());
  autograd::set_detect_anomaly(false);
  REQUIRE_FALSE(autograd::is_anomaly_enabled());
}

TEST_CASE("anomaly: a forward NaN or Inf names the op, the output and where the first bad value is", "[anomaly]") {
  DetectAnomalyGuard anomaly;
  const Tensor x = values({1, -1, 2, 4}, {2, 2});
  REQUIRE_THROWS_WITH(log(x), "anomaly: forward of 'log' produced NaN in its output [2, 2] (1 of 4 values, first at [0, 1])");
  const Tensor zero = zeros({3}, kFloat64);
  REQUIRE_THROWS_WITH(zero / zero, "anomaly: forward of 'div' produced NaN in its output [3] (3 of 3 values, first at [0])");
  REQUIRE_THROWS_WITH(exp(values({0, 800}, {2})), "anomaly: forward of 'exp' produced Inf in its output [2] (1 of 2 values, first at [1])");
  // Checked whether or not a graph is recorded, and in f32 as in f64.
  NoGradGuard no_grad;
  REQUIRE_THROWS_WITH(sqrt(values({-1, 4}, {2}).to(kFloat32)),
                      "anomaly: forward of 'sqrt' produced NaN in its output [2] (1 of 2 values, first at [0])");
}

TEST_CASE("anomaly: infinities carried along pass, a NaN made from them does not", "[anomaly]") {
  DetectAnomalyGuard anomaly;
  const Tensor masked = values({-kInf, 0.5, -kInf, 1.0}, {2, 2});  // an attention-style mask
  const Tensor p = softmax(masked + 1.0, -1);                       // -inf + 1 is still -inf: not new
  testing::require_close(p, {0, 1, 0, 1});
  REQUIRE_THROWS_WITH(masked * 0.0, "anomaly: forward of 'mul' produced NaN in its output [2, 2] (2 of 4 values, first at [0, 0]); "
                                    "its input 0 [2, 2] already held Inf");
}

TEST_CASE("anomaly: a parameter gone NaN is reported at the first op computing with it, not at a view", "[anomaly]") {
  DetectAnomalyGuard anomaly;
  const Tensor w = full({3, 2}, kNaN, kFloat64).requires_grad_();
  const Tensor wt = transpose(w, 0, 1);  // views only expose the value: not reported
  REQUIRE(std::isnan(unsqueeze(narrow(wt, 1, 1, 2), 0).to_vector<double>()[0]));
  REQUIRE_THROWS_WITH(matmul(ones({4, 2}, kFloat64), wt),
                      "anomaly: forward of 'matmul' produced NaN in its output [4, 3] (12 of 12 values, first at [0, 0]); "
                      "its input 1 [2, 3] already held NaN");
}

TEST_CASE("anomaly: a backward NaN or Inf names the node, the input and its shape", "[anomaly]") {
  DetectAnomalyGuard anomaly;
  SECTION("sqrt at 0: finite forward, infinite gradient") {
    const Tensor x = values({0, 4, 9}, {3}).requires_grad_();
    const Tensor y = sum(sqrt(x));
    REQUIRE(y.item() == 5.0);
    REQUIRE_THROWS_WITH(y.backward(), "anomaly: backward of 'sqrt' produced Inf in the gradient of input 0 [3] "
                                      "(1 of 3 values, first at [0])");
  }
  SECTION("matmul: the gradient of the second input, from a bad incoming gradient") {
    const Tensor a = values({1, 2}, {1, 2}), b = testing::randn64({2, 3}, 2);
    const Tensor y = matmul(a, b);
    REQUIRE_THROWS_WITH(y.backward(full({1, 3}, kInf, kFloat64)),
                        "anomaly: backward of 'matmul' produced Inf in the gradient of input 1 [2, 3] (6 of 6 values, "
                        "first at [0, 0]); the gradient it received already held Inf");
  }
  SECTION("a custom Function whose backward returns NaN; the ops inside that backward are not blamed") {
    const Tensor x = testing::randn64({2, 2}, 3);
    const Tensor y = sum(anomaly_test::NanGradient::apply(x));
    REQUIRE_THROWS_WITH(y.backward(), "anomaly: backward of 'anomaly_test::NanGradient' produced NaN in the gradient of "
                                      "input 0 [2, 2] (4 of 4 values, first at [0, 0])");
  }
  SECTION("a custom Function whose forward makes Inf: the op inside, else the Function") {
    const Tensor x = testing::randn64({3}, 4);
    REQUIRE_THROWS_WITH(anomaly_test::DivideByZero::apply(x),
                        "anomaly: forward of 'mul' produced Inf in its output [3] (3 of 3 values, first at [0])");
    REQUIRE_THROWS_WITH(anomaly_test::HandWrittenInf::apply(x), "anomaly: forward of 'anomaly_test::HandWrittenInf' "
                                                                "produced Inf in its output [3] (1 of 3 values, first at [1])");
  }
}

TEST_CASE("anomaly mode off: NaN and Inf just propagate", "[anomaly]") {
  REQUIRE_FALSE(autograd::is_anomaly_enabled());
  REQUIRE(std::isnan(log(values({-1}, {1})).item()));
  const Tensor x = values({0, 4}, {2}).requires_grad_();
  sum(sqrt(x)).backward();
  const std::vector<double> g = x.grad().to_vector<double>();
  REQUIRE(std::isinf(g[0]));
  REQUIRE(g[1] == 0.25);
  const Tensor w = testing::randn64({2, 2}, 5);
  sum(anomaly_test::NanGradient::apply(w)).backward();
  REQUIRE(std::isnan(w.grad().to_vector<double>()[3]));
}

TEST_CASE("anomaly: errors name the module path the op ran in, forward and backward", "[anomaly]") {
  Net net;
  net.to(kFloat64);
  const Tensor x = testing::randn64({4, 3}, 6);
  {
    DetectAnomalyGuard anomaly;
    SECTION("a forward inside a nested module") {
      net.blocks->at<anomaly_test::Block>(1)->fc->bias.detach().fill_(kNaN);
      REQUIRE_THROWS_WITH(net(x), "anomaly: forward of 'add' produced NaN in its output [4, 3] (12 of 12 values, "
                                          "first at [0, 0]); its input 1 [3] already held NaN; it ran in module blocks.1.fc");
    }
    SECTION("the root module is named by its class") {
      REQUIRE_THROWS_WITH(net(x, -1, -1e6), "anomaly: forward of 'log' produced NaN in its output [4, 3] (12 of 12 "
                                                    "values, first at [0, 0]); it ran in module Net");
    }
    SECTION("a backward reports the module its node's forward ran in") {
      const Tensor loss = sum(net(x, 2, 10.0));
      REQUIRE_THROWS_WITH(loss.backward(), "anomaly: backward of 'anomaly_test::NanGradient' produced NaN in the gradient "
                                           "of input 0 [4, 3] (12 of 12 values, first at [0, 0]); forward ran in module blocks.2");
    }
    SECTION("the module stack is per thread: another thread's ops run outside these modules") {
      nn::ForwardScope scope(*net.blocks->at<anomaly_test::Block>(0));
      REQUIRE(*autograd::current_module_label() == "blocks.0");
      std::string elsewhere = "unset";
      std::thread([&] {
        try {
          log(values({-1}, {1}));
        } catch (const Error& e) {
          elsewhere = e.what();
        }
      }).join();
      REQUIRE(elsewhere == "anomaly: forward of 'log' produced NaN in its output [1] (1 of 1 values, first at [0])");
    }
  }
  REQUIRE(autograd::current_module_label() == nullptr);
}

// nn::Callable (a module's call operator opens its ForwardScope) and nn::Sequential.
#include <limits>

#include "../helpers.hpp"

using namespace latent;

namespace {
// Records the module label current while its forward runs.
struct Probe : nn::Callable<Probe> {
  Tensor forward(const Tensor& x) const {
    const auto label = autograd::current_module_label();
    seen = label ? *label : "(none)";
    return x;
  }
  mutable std::string seen;
};
// Identity forward whose backward doubles the gradient: a bug gradcheck must find.
struct DoubledGradient : autograd::Function<DoubledGradient> {
  static Tensor forward(autograd::AutogradContext*, const Tensor& x) { return x * 1.0; }
  static std::vector<Tensor> backward(autograd::AutogradContext*, std::vector<Tensor> grads) { return {grads[0] * 2.0}; }
};
struct Holder : nn::Module {
  Holder() { probe = register_module("probe", std::make_shared<Probe>()); }
  std::shared_ptr<Probe> probe;
};
}  // namespace

TEST_CASE("calling a Callable module runs its forward inside its ForwardScope; forward itself does not", "[module][anomaly]") {
  Holder holder;
  autograd::DetectAnomalyGuard anomaly;
  (*holder.probe)(ones({1}));
  CHECK(holder.probe->seen == "probe");
  holder.probe->forward(ones({1}));
  CHECK(holder.probe->seen == "(none)");
}

TEST_CASE("Sequential names each module by its position, functions included, as torch.nn.Sequential", "[module][sequential]") {
  nn::Sequential net(std::make_shared<nn::Linear>(4, 3), relu, std::make_shared<nn::Linear>(3, 2, false));
  CHECK(net.size() == 3);
  std::vector<std::string> names;
  for (const auto& [name, t] : net.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"0.weight", "0.bias", "2.weight"});
  CHECK(net.module<nn::Linear>(2)->out_features == 2);
  CHECK(net.module<nn::Linear>(1) == nullptr);   // a function
  CHECK(net.module<nn::RMSNorm>(2) == nullptr);  // not that type
  CHECK_THROWS_AS(net.module<nn::Linear>(3), std::out_of_range);
}

TEST_CASE("Sequential's forward is the composition of its steps, in order", "[module][sequential]") {
  auto first = std::make_shared<nn::Linear>(4, 3);
  auto second = std::make_shared<nn::Linear>(3, 2);
  nn::Sequential net;
  net.push_back(first);
  net.push_back([](const Tensor& x) { return x * 2.0; });
  net.push_back(second);
  const Tensor x = testing::randn64({5, 4}, 1).to(kFloat32);
  const Tensor expected = (*second)((*first)(x) * 2.0);
  CHECK(net(x).to_vector<float>() == expected.to_vector<float>());
  CHECK(nn::Sequential()(x).to_vector<float>() == x.to_vector<float>());  // empty: the identity
}

TEST_CASE("Sequential gradchecks with respect to its parameters and input in f64", "[module][sequential][gradcheck]") {
  nn::Sequential net(std::make_shared<nn::Linear>(4, 5), [](const Tensor& h) { return tanh(h); },
                     std::make_shared<nn::Linear>(5, 2));
  net.to(kFloat64);
  const Tensor x = testing::randn64({3, 4}, 2).requires_grad_(true);
  CHECK(autograd::gradcheck_module(net, [&](const std::vector<Tensor>& in) { return net(in[0]); }, {x}));
  // The same check fails once one step's backward is wrong.
  nn::Sequential broken(std::make_shared<nn::Linear>(4, 5), [](const Tensor& h) { return DoubledGradient::apply(h); });
  broken.to(kFloat64);
  CHECK_THROWS_WITH(autograd::gradcheck_module(broken, [&](const std::vector<Tensor>& in) { return broken(in[0]); }, {x}),
                    Catch::Matchers::StartsWith("gradcheck(Sequential)"));
}

TEST_CASE("Sequential: in anomaly mode a NaN is reported in the path of the step that made it", "[module][sequential][anomaly]") {
  struct Model : nn::Module {
    Model() {
      body = register_module("body", std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(2, 2),
                                                                     std::make_shared<nn::RMSNorm>(2)));
    }
    std::shared_ptr<nn::Sequential> body;
  } model;
  model.body->module<nn::RMSNorm>(1)->weight.detach().fill_(std::numeric_limits<double>::quiet_NaN());
  autograd::DetectAnomalyGuard anomaly;
  CHECK_THROWS_WITH((*model.body)(ones({1, 2})),
                    Catch::Matchers::EndsWith("it ran in module body.1"));
}

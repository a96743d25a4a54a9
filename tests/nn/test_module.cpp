// nn::Module: registration order, dotted names, state dicts, modes, dtype conversion, module paths.
#include <limits>

#include "../helpers.hpp"

using namespace latent;

namespace {
struct Block : nn::Module {
  Block() {
    fc = register_module("fc", std::make_shared<nn::Linear>(3, 2));
    norm = register_module("norm", std::make_shared<nn::RMSNorm>(2));
    register_buffer("steps", zeros({1}, kInt64));
  }
  std::shared_ptr<nn::Linear> fc;
  std::shared_ptr<nn::RMSNorm> norm;
};
struct Net : nn::Module {
  Net() {
    embed = register_module("embed", std::make_shared<nn::Embedding>(5, 3));
    block = register_module("block", std::make_shared<Block>());
    scale = register_parameter("scale", ones({1}));
  }
  std::shared_ptr<nn::Embedding> embed;
  std::shared_ptr<Block> block;
  Tensor scale;
};
}  // namespace

TEST_CASE("named_parameters lists dotted names: own tensors first, then submodules in registration order", "[module]") {
  Net net;
  std::vector<std::string> names;
  for (auto& [name, t] : net.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"scale", "embed.weight", "block.fc.weight", "block.fc.bias", "block.norm.weight"});  // as PyTorch
  CHECK(net.state_dict().count("block.steps") == 1);
  CHECK(net.num_parameters() == 15 + 6 + 2 + 2 + 1);
  for (auto& t : net.parameters()) CHECK(t.requires_grad());
}

TEST_CASE("load_state_dict copies values and reports every problem", "[module]") {
  Net a, b;
  b.load_state_dict(a.state_dict());
  CHECK(b.block->fc->weight.to_vector<float>() == a.block->fc->weight.to_vector<float>());
  auto state = a.state_dict();
  state.erase("scale");
  state["extra"] = zeros({1});
  state["block.fc.bias"] = zeros({7});
  try {
    b.load_state_dict(state);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("missing keys: scale") != std::string::npos);
    CHECK(m.find("unexpected keys: extra") != std::string::npos);
    CHECK(m.find("block.fc.bias (checkpoint [7], model [2])") != std::string::npos);
  }
  state["block.fc.bias"] = zeros({2});
  b.load_state_dict(state, false);  // non-strict: missing and unexpected keys are fine
  CHECK(b.block->fc->bias.to_vector<float>() == std::vector<float>{0, 0});
}

TEST_CASE("train/eval propagate; zero_grad clears; to() converts in place", "[module]") {
  Net net;
  net.eval();
  CHECK_FALSE(net.block->fc->is_training());
  net.train();
  CHECK(net.block->norm->is_training());
  sum(net.block->fc->forward(ones({4, 3}))).backward();
  CHECK(net.block->fc->weight.grad().defined());
  net.zero_grad();
  CHECK_FALSE(net.block->fc->weight.grad().defined());
  net.to(kFloat64);
  CHECK(net.block->fc->weight.dtype() == kFloat64);
  CHECK(net.block->fc->forward(ones({1, 3}, kFloat64)).dtype() == kFloat64);
}

TEST_CASE("module_path is the dotted prefix of the module's parameter names", "[module][anomaly]") {
  Net net;
  CHECK(net.module_path().empty());
  CHECK(net.block->module_path() == "block");
  CHECK(net.block->fc->module_path() == "block.fc");
  for (auto& [name, t] : net.named_parameters()) {  // every parameter name is its owner's path + its own name
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos) continue;
    bool owner_found = false;
    for (const nn::Module* m : {static_cast<const nn::Module*>(net.embed.get()), static_cast<const nn::Module*>(net.block.get()),
                                static_cast<const nn::Module*>(net.block->fc.get()), static_cast<const nn::Module*>(net.block->norm.get())})
      owner_found = owner_found || m->module_path() == name.substr(0, dot);
    CHECK(owner_found);
  }
  nn::ModuleList list;
  auto first = list.push_back(std::make_shared<Block>());
  auto second = list.push_back(std::make_shared<Block>());
  CHECK(first->module_path() == "0");
  CHECK(second->norm->module_path() == "1.norm");
}

TEST_CASE("a module shared by two parents keeps its first path; a dead parent unlinks its children", "[module][anomaly]") {
  struct Holder : nn::Module {
    explicit Holder(std::shared_ptr<nn::Linear> shared) { inner = register_module("inner", std::move(shared)); }
    std::shared_ptr<nn::Linear> inner;
  };
  auto shared = std::make_shared<nn::Linear>(2, 2);
  auto a = std::make_shared<Holder>(shared);
  {
    Holder b(shared);
    CHECK(shared->module_path() == "inner");
  }
  CHECK(shared->module_path() == "inner");  // still a's
  a.reset();
  CHECK(shared->module_path().empty());  // an orphan is a root again
}

TEST_CASE("registering a module under itself or a descendant is refused", "[module][anomaly]") {
  struct Open : nn::Module {
    void add(const std::string& name, std::shared_ptr<nn::Module> m) { register_module(name, std::move(m)); }
  };
  auto root = std::make_shared<Open>(), child = std::make_shared<Open>();
  root->add("child", child);
  CHECK_THROWS_WITH(child->add("root", root), "Module: submodule 'root' is this module or one of its parents (a cycle)");
  CHECK_THROWS_WITH(root->add("self", root), "Module: submodule 'self' is this module or one of its parents (a cycle)");
}

TEST_CASE("ForwardScope labels ops with the module path in anomaly mode only, and nests", "[module][anomaly]") {
  Net net;
  {
    nn::ForwardScope scope(*net.block);
    CHECK(autograd::current_module_label() == nullptr);  // off: nothing pushed
  }
  autograd::DetectAnomalyGuard anomaly;
  {
    nn::ForwardScope outer(net);
    CHECK(*autograd::current_module_label() == "Net");  // a root: its class name
    {
      nn::ForwardScope inner(*net.block->fc);
      CHECK(*autograd::current_module_label() == "block.fc");
    }
    CHECK(*autograd::current_module_label() == "Net");
  }
  CHECK(autograd::current_module_label() == nullptr);
  // Calling a library layer opens its scope: a NaN weight is reported with the layer's path.
  net.block->norm->weight.detach().fill_(std::numeric_limits<double>::quiet_NaN());
  CHECK_THROWS_WITH((*net.block->norm)(ones({2, 2})),
                    "anomaly: forward of 'rms_norm' produced NaN in its output [2, 2] (4 of 4 values, first at [0, 0]); "
                    "its input 1 [2] already held NaN; it ran in module block.norm");
}

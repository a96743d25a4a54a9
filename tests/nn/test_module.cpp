// nn::Module: registration order, dotted names, state dicts, modes, dtype conversion.
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

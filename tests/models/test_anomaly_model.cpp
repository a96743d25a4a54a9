// Anomaly mode on whole models: a NaN planted in one weight is reported with the checkpoint path of
// the module holding it (one routed expert of DeepSeek-V3, a Llama MLP), and turning the mode on
// leaves the loss and every gradient bitwise unchanged.
#include <algorithm>
#include <limits>

#include "../helpers.hpp"

using namespace latent;
using autograd::DetectAnomalyGuard;
using models::DeepSeekV3Config;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Tensor random_ids(const Shape& shape, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  return randint(0, vocab, shape, &gen);
}

}  // namespace

TEST_CASE("anomaly: a NaN expert weight of DeepSeek-V3 is reported with the expert's down_proj path", "[anomaly][dsv3]") {
  models::DeepSeekV3 model(DeepSeekV3Config::preset("tiny"));
  const int64_t B = 2, T = 8, hidden = model.config().hidden_size, width = model.config().moe_intermediate_size;
  const Tensor ids = random_ids({B, T + 1}, model.config().vocab_size, 11);
  {
    DetectAnomalyGuard anomaly;  // a healthy f32 training step raises no false alarm
    REQUIRE_NOTHROW(model.loss(ids).total.backward());
  }
  model.loss(ids);  // routing of the healthy model: a NaN only shows in an expert that gets tokens
  const auto& routing = model.last_routing();
  const auto layer = std::find_if(routing.begin(), routing.end(), [](const auto& r) { return r.name == "model.layers.2.mlp"; });
  REQUIRE(layer != routing.end());
  const std::vector<int64_t> loads = layer->loads.to_vector<int64_t>();
  int64_t expert = -1;  // the last expert with tokens, so the path is not the first one by luck
  for (int64_t e = 0; e < static_cast<int64_t>(loads.size()); ++e)
    if (loads[static_cast<size_t>(e)] > 0) expert = e;
  REQUIRE(expert > 0);
  const int64_t rows = loads[static_cast<size_t>(expert)];

  auto moe = model.model->layers->at<models::DecoderLayer>(2)->moe;
  moe->experts->at<nn::SwiGLU>(static_cast<size_t>(expert))->down_proj->weight.detach().fill_(kNaN);
  // Off: the NaN just flows into the loss.
  REQUIRE(std::isnan(model.loss(ids).total.item()));

  DetectAnomalyGuard anomaly;
  const std::string values = std::to_string(rows * hidden);
  const std::string e = std::to_string(expert);
  REQUIRE_THROWS_WITH(model.loss(ids),
                      "anomaly: forward of 'moe_experts' produced NaN in the down_proj output of expert " + e + " [" +
                          std::to_string(rows) + ", " + std::to_string(hidden) + "] (" + values + " of " + values +
                          " values, first at [0, 0]); the down_proj weight of expert " + e + " [" + std::to_string(hidden) +
                          ", " + std::to_string(width) + "] already held NaN; it ran in module " +
                          "model.layers.2.mlp.experts." + e + ".down_proj");
}

TEST_CASE("anomaly: turning the mode on changes neither the loss nor any gradient, bit for bit", "[anomaly][dsv3]") {
  DeepSeekV3Config c = DeepSeekV3Config::preset("tiny");
  c.initializer_range = 0.2;  // larger weights than the preset's: any change in the arithmetic would show
  models::DeepSeekV3 model(c);
  const Tensor ids = random_ids({2, 9}, c.vocab_size, 12);
  auto step = [&] {
    model.zero_grad();
    const auto losses = model.loss(ids);
    losses.total.backward();
    std::vector<std::pair<std::string, std::vector<float>>> grads;
    for (auto& [name, p] : model.named_parameters())
      if (p.grad().defined()) grads.emplace_back(name, p.grad().to_vector<float>());
    return std::pair{losses.total.to_vector<float>(), grads};
  };
  const auto [plain_loss, plain_grads] = step();
  const auto [checked_loss, checked_grads] = [&] {
    DetectAnomalyGuard anomaly;  // a healthy model trains without a false alarm
    return step();
  }();
  REQUIRE(std::isfinite(plain_loss.at(0)));
  CHECK(checked_loss == plain_loss);
  REQUIRE(checked_grads.size() == plain_grads.size());
  int64_t expert_grads = 0;
  for (size_t i = 0; i < plain_grads.size(); ++i) {
    INFO(plain_grads[i].first);
    REQUIRE(checked_grads[i].first == plain_grads[i].first);
    CHECK(checked_grads[i].second == plain_grads[i].second);
    expert_grads += plain_grads[i].first.find(".experts.") != std::string::npos;
  }
  CHECK(expert_grads > 0);
}

TEST_CASE("anomaly: a NaN weight of Llama is reported with its module path", "[anomaly][llama]") {
  models::LlamaConfig c;
  c.vocab_size = 19, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 6, c.max_position_embeddings = 32;
  models::Llama model(c);
  const Tensor ids = random_ids({2, 6}, c.vocab_size, 13);
  {
    DetectAnomalyGuard anomaly;
    REQUIRE_NOTHROW(model.loss(ids).backward());
  }
  model.model->layers->at<models::LlamaDecoderLayer>(1)->mlp->down_proj->weight.detach().fill_(kNaN);
  DetectAnomalyGuard anomaly;
  REQUIRE_THROWS_WITH(model.forward(narrow(ids, 1, 0, 5)),
                      "anomaly: forward of 'linear' produced NaN in its output [2, 5, 16] (160 of 160 values, first at "
                      "[0, 0, 0]); its input 1 [16, 24] already held NaN; it ran in module model.layers.1.mlp.down_proj");
}

// Hostile inputs to model loading: model directories whose weights do not match their config,
// absurd Llama configs, broken trainer state, and token ids or lengths a model cannot take. Each
// must be refused with latent::Error saying what is wrong, never crash or allocate without bound.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "train/checkpoint.hpp"
#include "models/llama.hpp"
#include "../helpers.hpp"

using namespace latent;
using models::DeepSeekV3;
using models::DeepSeekV3Config;
namespace fs = std::filesystem;
using latent::testing::TempDir;

namespace {

// A DeepSeek-V3 small enough to save and load in milliseconds, with every feature: dense and MoE
// layers, grouped routing, q compression, an MTP module.
DeepSeekV3Config micro_config() {
  DeepSeekV3Config c;
  c.vocab_size = 8, c.hidden_size = 4, c.intermediate_size = 8, c.moe_intermediate_size = 2;
  c.num_hidden_layers = 2, c.first_k_dense_replace = 1, c.num_attention_heads = 1, c.q_lora_rank = 2;
  c.kv_lora_rank = 2, c.qk_nope_head_dim = 2, c.qk_rope_head_dim = 2, c.v_head_dim = 2;
  c.n_routed_experts = 4, c.n_shared_experts = 1, c.num_experts_per_tok = 2, c.n_group = 2, c.topk_group = 1;
  c.max_position_embeddings = 8, c.num_nextn_predict_layers = 1, c.routed_scaling_factor = 2.5;
  return c;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

}  // namespace

TEST_CASE("a model directory whose weights do not match its config is refused naming the tensor",
          "[hostile][checkpoint]") {
  TempDir tmp;
  const fs::path dir = tmp.path / "model";
  DeepSeekV3(micro_config()).save_pretrained(dir.string());
  const std::string weights = (dir / "model.safetensors").string();
  const std::map<std::string, Tensor> saved = io::load_safetensors(weights);
  REQUIRE_NOTHROW(DeepSeekV3::from_pretrained(dir.string()));

  auto refused_with = [&](std::map<std::string, Tensor> state, const std::string& needle) {
    io::save_safetensors(weights, state);
    CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir.string()), Catch::Contains(needle));
  };
  SECTION("a tensor missing") {
    auto state = saved;
    state.erase("model.norm.weight");
    refused_with(state, "missing keys: model.norm.weight");
  }
  SECTION("a tensor the model does not have") {
    auto state = saved;
    state["model.layers.0.mlp.experts.0.up_proj.weight"] = zeros({2, 4});  // layer 0 is dense
    refused_with(state, "unexpected keys: model.layers.0.mlp.experts.0.up_proj.weight");
  }
  SECTION("a tensor of the wrong shape") {
    auto state = saved;
    state["model.norm.weight"] = zeros({5});
    refused_with(state, "shape mismatches: model.norm.weight (checkpoint [5], model [4])");
  }
  SECTION("a config that disagrees with the weights") {
    DeepSeekV3Config wider = micro_config();
    wider.vocab_size = 9;
    wider.to_json_file((dir / "config.json").string());
    CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir.string()),
                      Catch::Contains("model.embed_tokens.weight (checkpoint [8, 4], model [9, 4])"));
  }
  SECTION("weights cut short") {
    std::string bytes;
    {
      std::ifstream in(weights, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    write_text(weights, bytes.substr(0, bytes.size() - 4));
    CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir.string()),
                      Catch::Contains(weights) && Catch::Contains("run past the end of the data section"));
  }
  SECTION("no weights, or a tensor in two shards") {
    fs::rename(weights, dir / "model-00001-of-00002.safetensors");
    io::save_safetensors((dir / "model-00002-of-00002.safetensors").string(),
                         {{"model.norm.weight", saved.at("model.norm.weight")}});
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    for (const auto& [name, t] : saved) index["weight_map"][name] = "model-00001-of-00002.safetensors";
    index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors";
    write_text(dir / "model.safetensors.index.json", index.dump());
    CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir.string()),
                      Catch::Contains("tensor 'model.norm.weight' is in shard 'model-00001-of-00002.safetensors' but") &&
                          Catch::Contains("places it in 'model-00002-of-00002.safetensors' (stored twice, or misplaced)"));
    fs::remove(dir / "model.safetensors.index.json");
    CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir.string()),
                      Catch::Contains("no model.safetensors or model.safetensors.index.json"));
  }
  SECTION("no config.json, or an absurd one") {
    fs::remove(dir / "config.json");
    CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir.string()), Catch::Contains("config.json"));
    auto j = nlohmann::json::parse(micro_config().to_json_string());
    j["hidden_size"] = 1'000'000'000'000;
    write_text(dir / "config.json", j.dump());
    CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir.string()), Catch::Contains("sizes too large"));
  }
}

TEST_CASE("absurd Llama configs are refused before anything is allocated", "[hostile][llama][config]") {
  const std::string base = models::LlamaConfig::from_json_file(testing::test_data("llama-tiny/config.json")).to_json_string();
  auto refused = [&](const std::map<std::string, std::string>& edits, const std::string& needle) {
    auto j = nlohmann::json::parse(base);
    for (const auto& [key, value] : edits) {
      if (value.empty()) j.erase(key);
      else j[key] = nlohmann::json::parse(value);
    }
    INFO(j.dump());
    CHECK_THROWS_WITH(models::LlamaConfig::from_json_string(j.dump(), "llama/config.json"), Catch::Contains(needle));
  };
  refused({{"hidden_size", "1000000000000"}, {"head_dim", ""}}, "llama/config.json: sizes too large");
  refused({{"hidden_size", "4611686018427387904"}, {"intermediate_size", "4611686018427387904"}, {"head_dim", ""}},
          "overflows 64 bits");
  refused({{"num_hidden_layers", "1000000000000000000"}}, "exceeds latent's limit of 4096 layers");
  refused({{"max_position_embeddings", "1000000000000000"}}, "max_position_embeddings 1000000000000000");
  std::string huge_theta = base;
  const size_t theta = huge_theta.find("\"rope_theta\": ");
  REQUIRE(theta != std::string::npos);
  huge_theta.insert(theta + 14, "1e400, \"unused\": ");
  CHECK_THROWS_WITH(models::LlamaConfig::from_json_string(huge_theta, "llama/config.json"),
                    Catch::Contains("llama/config.json: invalid JSON: number overflow parsing '1e400'"));
  models::LlamaConfig c = models::LlamaConfig::from_json_string(base);
  c.rope_theta = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("LlamaConfig: key 'rope_theta' must be finite, got inf"));
}

TEST_CASE("a broken trainer_state.json is refused naming the file and the key", "[hostile][checkpoint]") {
  TempDir tmp;
  for (const char* name : {"config.json", "model.safetensors", "optimizer.safetensors"}) write_text(tmp.path / name, "");
  const fs::path state = tmp.path / "trainer_state.json";
  auto refused = [&](const std::string& text, const std::string& needle) {
    write_text(state, text);
    INFO(text);
    CHECK_THROWS_WITH(train::load_trainer_state(tmp.path.string()),
                      Catch::Contains(state.string()) && Catch::Contains(needle));
  };
  write_text(state, R"({"step": 3, "sampler": {"seed": 1, "offset": 2}})");
  CHECK(train::load_trainer_state(tmp.path.string()).step == 3);
  refused(R"({"step": -1, "sampler": {"seed": 1, "offset": 2}})", "key 'step' must be >= 0");
  refused(R"({"step": "3", "sampler": {"seed": 1, "offset": 2}})", "key 'step' must be an integer");
  refused(R"({"step": 3})", "key 'sampler' missing");
  refused(R"({"step": 3, "sampler": {"seed": -1, "offset": 2}})", "key 'seed'");
  refused(R"({"step": 3, "sampler": {"seed": 1, "offset": 2}, "step": 4})", "duplicate key 'step'");
  refused(R"({"step": 3, "sampler": )", "invalid JSON");
}

TEST_CASE("token ids out of range and sequences too long are refused by every entry point", "[hostile][dsv3]") {
  DeepSeekV3 model(micro_config());  // vocab 8, max_position_embeddings 8
  // loss() reads T + 1 ids: the targets are checked as well as the inputs.
  CHECK_THROWS_WITH(model.loss(from_vector<int64_t>({1, 2, 3, 8}, {1, 4})), Catch::Contains("token id 8 out of range [0, 8)"));
  CHECK_THROWS_WITH(model.loss(from_vector<int64_t>({1, 2, -3, 4}, {1, 4})), Catch::Contains("token id -3 out of range"));
  CHECK_THROWS_WITH(model.loss(zeros({1, 10}, kInt64)), Catch::Contains("max_position_embeddings 8"));
  models::DeepSeekV3::GenerateOptions options;
  options.max_new_tokens = 2;
  CHECK_THROWS_WITH(model.generate(from_vector<int64_t>({1, 99}), options), Catch::Contains("token id 99 out of range"));
  CHECK_THROWS_WITH(model.generate(zeros({7}, kInt64), options), Catch::Contains("max_position_embeddings 8"));

  models::LlamaConfig c;
  c.vocab_size = 5, c.hidden_size = 4, c.intermediate_size = 8, c.num_hidden_layers = 1, c.num_attention_heads = 1;
  c.num_key_value_heads = 1, c.head_dim = 4, c.max_position_embeddings = 4;
  models::Llama llama(c);
  CHECK_THROWS_WITH(llama.forward(from_vector<int64_t>({0, 5}, {1, 2})), Catch::Contains("5 out of range [0, 5)"));
  CHECK_THROWS_WITH(llama.forward(zeros({1, 5}, kInt64)), Catch::Contains("max_position_embeddings 4"));
}

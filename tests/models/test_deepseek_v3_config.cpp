// DeepSeekV3Config: presets, parameter counts of MODEL.md, JSON round trips, and refusal of
// impossible configs with the offending key named.
#include <filesystem>
#include <fstream>

#include "../helpers.hpp"

using namespace latent;
using models::DeepSeekV3Config;

TEST_CASE("parameter counts match MODEL.md for every preset", "[dsv3][config]") {
  const auto big = DeepSeekV3Config::preset("deepseek-v3-671b");
  CHECK(big.num_parameters() == 671026419200LL);
  CHECK(big.num_activated_parameters() == 37552297472LL);
  CHECK(DeepSeekV3Config::preset("tiny").num_parameters() == 207968);
  CHECK(DeepSeekV3Config::preset("small").num_parameters() == 6552624);
  CHECK_THROWS_WITH(DeepSeekV3Config::preset("huge"), Catch::Contains("unknown preset 'huge'"));
}

TEST_CASE("the counted parameters are the ones a model allocates", "[dsv3][config]") {
  for (const char* name : {"tiny", "small"}) {
    const auto config = DeepSeekV3Config::preset(name);
    models::DeepSeekV3 model(config);
    int64_t stored = 0;  // main model only: MTP layers live at index >= num_hidden_layers
    const std::string mtp = "model.layers." + std::to_string(config.num_hidden_layers) + ".";
    for (auto& [key, t] : model.state_dict())
      if (key.rfind(mtp, 0) != 0) stored += t.numel();
    CHECK(stored == config.num_parameters());
  }
}

TEST_CASE("the shared fixture's config.json reads as the tiny preset and round-trips", "[dsv3][config]") {
  const auto c = DeepSeekV3Config::from_json_file(latent::testing::test_data("dsv3-tiny/config.json"));
  const auto tiny = DeepSeekV3Config::preset("tiny");
  CHECK(c.to_json_string() == tiny.to_json_string());
  CHECK(c.rope_scaling.has_value());
  CHECK(c.rope_scaling->factor == 4.0);
  const std::string path = (std::filesystem::temp_directory_path() / "latent_config_roundtrip.json").string();
  c.to_json_file(path);
  CHECK(DeepSeekV3Config::from_json_file(path).to_json_string() == c.to_json_string());
  std::filesystem::remove(path);
}

TEST_CASE("invalid configs are refused naming the key", "[dsv3][config]") {
  const std::string base = DeepSeekV3Config::preset("tiny").to_json_string();
  auto with = [&](const std::string& key, const std::string& value) {
    auto j = nlohmann::json::parse(base);
    if (value.empty()) j.erase(key);
    else j[key] = nlohmann::json::parse(value);
    return j.dump();
  };
  auto refused = [&](const std::string& text, const std::string& needle) {
    INFO(text);
    CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(text), Catch::Contains(needle));
  };
  refused(with("n_routed_experts", "6"), "n_routed_experts");              // not divisible by n_group 4
  refused(with("topk_group", "5"), "topk_group");                          // more than n_group
  refused(with("num_experts_per_tok", "5"), "num_experts_per_tok");        // kept groups offer 2 x 2
  refused(with("hidden_size", "0"), "hidden_size");
  refused(with("num_attention_heads", "-2"), "num_attention_heads");
  refused(with("qk_rope_head_dim", "7"), "qk_rope_head_dim");
  refused(with("kv_lora_rank", "0"), "kv_lora_rank");
  refused(with("vocab_size", ""), "vocab_size");                           // missing
  refused(with("vocab_size", "\"256\""), "vocab_size");                    // wrong type
  refused(with("hidden_size", "64.5"), "hidden_size");                     // not an integer
  refused(with("scoring_func", "\"relu\""), "scoring_func");
  refused(with("topk_method", "\"best\""), "topk_method");
  refused(with("hidden_act", "\"gelu\""), "hidden_act");
  refused("{not json", "invalid JSON");
  CHECK_THROWS_WITH(DeepSeekV3Config::from_json_file("/nonexistent/config.json"), Catch::Contains("/nonexistent/config.json"));
}

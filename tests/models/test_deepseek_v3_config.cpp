// DeepSeekV3Config: presets, parameter counts of docs/deepseek_v3.md, JSON round trips, and refusal of
// impossible configs with the offending key named.
#include <filesystem>
#include <fstream>
#include <limits>

#include "../helpers.hpp"

using namespace latent;
using models::DeepSeekV3Config;

TEST_CASE("parameter counts match docs/deepseek_v3.md for every preset", "[dsv3][config]") {
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

// Sizes no machine could hold are refused by validation, before a model allocates anything, and
// without counting layer by layer (10^18 layers must not take 10^18 steps).
TEST_CASE("absurd sizes are refused before anything is allocated", "[dsv3][config][hostile]") {
  const std::string base = DeepSeekV3Config::preset("tiny").to_json_string();
  auto with = [&](const std::map<std::string, std::string>& edits) {
    auto j = nlohmann::json::parse(base);
    for (const auto& [key, value] : edits) j[key] = nlohmann::json::parse(value);
    return j.dump();
  };
  auto refused = [&](const std::string& text, const std::string& needle) {
    INFO(text);
    CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(text), Catch::Contains(needle));
  };
  // 256 x 10^12 embedding entries alone exceed 2^40.
  refused(with({{"hidden_size", "1000000000000"}}), "sizes too large");
  refused(with({{"vocab_size", "1000000000000"}}), "sizes too large: the model would allocate");
  refused(with({{"hidden_size", "4611686018427387904"}, {"vocab_size", "4611686018427387904"}}), "overflows 64 bits");
  refused(with({{"qk_nope_head_dim", "9223372036854775806"}}), "overflows 64 bits");  // nope + rope overflows
  refused(with({{"num_hidden_layers", "1000000000000000000"}}), "exceeds latent's limit of 4096 layers");
  refused(with({{"num_nextn_predict_layers", "1000000000000000000"}}), "exceeds latent's limit of 4096 layers");
  refused(with({{"n_routed_experts", "1000000000"}, {"n_group", "1"}, {"topk_group", "1"}}),
          "exceeds latent's limit of 65536 experts");
  refused(with({{"max_position_embeddings", "1000000000000000"}}), "max_position_embeddings 1000000000000000");
  refused(with({{"moe_intermediate_size", "1000000000"}}), "sizes too large");  // 9 experts x 3 x 64 x 10^9 x 3 layers

  // The limit sits far above the released model, whose count is unchanged.
  const auto big = DeepSeekV3Config::preset("deepseek-v3-671b");
  CHECK(DeepSeekV3Config::from_json_string(big.to_json_string()).num_parameters() == 671'026'419'200LL);
}

TEST_CASE("non-finite numbers and a dense layer without intermediate_size are refused", "[dsv3][config][hostile]") {
  const std::string base = DeepSeekV3Config::preset("tiny").to_json_string();
  // JSON has no infinity; a number beyond double's range is refused by the parser.
  const std::string theta = "\"rope_theta\": 10000.0";
  std::string huge_theta = base;
  REQUIRE(huge_theta.find(theta) != std::string::npos);
  huge_theta.replace(huge_theta.find(theta), theta.size(), "\"rope_theta\": 1e400");
  CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(huge_theta, "big/config.json"),
                    Catch::Contains("big/config.json: invalid JSON: number overflow parsing '1e400'"));
  // A config built in code can hold one; written out it would become null.
  for (double DeepSeekV3Config::*field : {&DeepSeekV3Config::rope_theta, &DeepSeekV3Config::rms_norm_eps,
                                          &DeepSeekV3Config::routed_scaling_factor, &DeepSeekV3Config::aux_loss_alpha,
                                          &DeepSeekV3Config::initializer_range}) {
    DeepSeekV3Config c = DeepSeekV3Config::preset("tiny");
    c.*field = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH(c.validate(), Catch::Contains("must be finite, got inf"));
    c.*field = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(c.validate(), Error);
  }
  DeepSeekV3Config yarn = DeepSeekV3Config::preset("tiny");
  yarn.rope_scaling->mscale = -std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(yarn.validate(), Catch::Contains("key 'rope_scaling.mscale' must be finite, got -inf"));

  // first_k_dense_replace 0 with moe_layer_freq 2: layer 1 is dense and needs intermediate_size.
  auto j = nlohmann::json::parse(base);
  j["first_k_dense_replace"] = 0, j["moe_layer_freq"] = 2, j["intermediate_size"] = 0;
  CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(j.dump()),
                    Catch::Contains("key 'intermediate_size' must be positive, got 0"));
  j["moe_layer_freq"] = 1;  // every layer MoE: intermediate_size is unused
  CHECK_NOTHROW(DeepSeekV3Config::from_json_string(j.dump()));
}

TEST_CASE("a config.json that repeats a key is refused", "[dsv3][config][hostile]") {
  std::string text = DeepSeekV3Config::preset("tiny").to_json_string();
  text.insert(1, "\"vocab_size\": 512,");
  CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(text, "dup/config.json"),
                    Catch::Contains("dup/config.json") && Catch::Contains("vocab_size"));
}

// Published DeepSeek-V3 checkpoints: the official config.json parses unchanged, a sharded FP8
// directory with block scales loads into exactly the dequantised float32 parameters, and
// save_pretrained's shards load back, and a model written in the published layout by the PyTorch
// twin (tests/data/make_published.py) gives the twin's logits and losses (docs/checkpoints.md).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "../helpers.hpp"
#include "../raw_safetensors.hpp"
#include "deepseek_fixture.hpp"

using namespace latent;
using models::DeepSeekV3;
using models::DeepSeekV3Config;
namespace fs = std::filesystem;
using latent::testing::RawTensor;
using latent::testing::TempDir;
using latent::testing::test_data;

namespace {

// Every feature at toy size: dense and MoE layers, grouped routing, q compression, one MTP module.
DeepSeekV3Config micro_config() {
  DeepSeekV3Config c;
  c.vocab_size = 16, c.hidden_size = 8, c.intermediate_size = 12, c.moe_intermediate_size = 4;
  c.num_hidden_layers = 2, c.first_k_dense_replace = 1, c.num_attention_heads = 2, c.q_lora_rank = 6;
  c.kv_lora_rank = 4, c.qk_nope_head_dim = 2, c.qk_rope_head_dim = 2, c.v_head_dim = 2;
  c.n_routed_experts = 4, c.n_shared_experts = 1, c.num_experts_per_tok = 2, c.n_group = 2, c.topk_group = 1;
  c.max_position_embeddings = 16, c.num_nextn_predict_layers = 1, c.routed_scaling_factor = 2.5;
  return c;
}

// E4M3 by its definition (docs/checkpoints.md): bias 7, subnormals at exponent 0, no infinities.
double e4m3_value(uint8_t code) {
  const int exponent = (code >> 3) & 15, fraction = code & 7;
  const double magnitude = exponent == 0 ? fraction / 8.0 * std::pow(2.0, -6) : (1 + fraction / 8.0) * std::pow(2.0, exponent - 7);
  return (code & 0x80) ? -magnitude : magnitude;
}

bool is_fp8_linear(const std::string& name, const Tensor& t) {
  return t.dim() == 2 && (name.ends_with("_proj.weight") || name.ends_with("_mqa.weight"));
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

}  // namespace

TEST_CASE("the official DeepSeek-V3 config.json parses unchanged, with its published values", "[checkpoint][published]") {
  const DeepSeekV3Config c = DeepSeekV3Config::from_json_file(test_data("deepseek-v3-671b/config.json"));
  CHECK(c.vocab_size == 129280);
  CHECK(c.hidden_size == 7168);
  CHECK(c.intermediate_size == 18432);
  CHECK(c.moe_intermediate_size == 2048);
  CHECK(c.num_hidden_layers == 61);
  CHECK(c.first_k_dense_replace == 3);
  CHECK(c.num_attention_heads == 128);
  CHECK(c.q_lora_rank == 1536);
  CHECK(c.kv_lora_rank == 512);
  CHECK(c.qk_nope_head_dim == 128);
  CHECK(c.qk_rope_head_dim == 64);
  CHECK(c.v_head_dim == 128);
  CHECK(c.n_routed_experts == 256);
  CHECK(c.n_shared_experts == 1);
  CHECK(c.num_experts_per_tok == 8);
  CHECK(c.n_group == 8);
  CHECK(c.topk_group == 4);
  CHECK(c.max_position_embeddings == 163840);
  CHECK(c.num_nextn_predict_layers == 1);
  CHECK(c.routed_scaling_factor == 2.5);
  CHECK(c.aux_loss_alpha == 0.001);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK(c.rope_theta == 10000);
  CHECK(c.norm_topk_prob);
  CHECK(!c.tie_word_embeddings);
  CHECK(c.scoring_func == models::ScoringFunc::kSigmoid);
  CHECK(c.topk_method == models::TopkMethod::kNoauxTc);
  REQUIRE(c.rope_scaling);
  CHECK(c.rope_scaling->factor == 40);
  CHECK(c.rope_scaling->original_max_position_embeddings == 4096);
  CHECK(c.rope_scaling->beta_fast == 32);
  CHECK(c.rope_scaling->beta_slow == 1);
  CHECK(c.rope_scaling->mscale == 1.0);
  CHECK(c.rope_scaling->mscale_all_dim == 1.0);
  REQUIRE(c.quantization_config);
  CHECK(c.quantization_config->quant_method == "fp8");
  CHECK(c.quantization_config->fmt == "e4m3");
  CHECK(c.quantization_config->activation_scheme == "dynamic");
  CHECK(c.quantization_config->weight_block_size.rows == 128);
  CHECK(c.quantization_config->weight_block_size.cols == 128);
  // The published 671B main-model count, and the preset agrees key by key.
  CHECK(c.num_parameters() == 671'026'419'200);
  const DeepSeekV3Config preset = DeepSeekV3Config::preset("deepseek-v3-671b");
  CHECK(preset.num_parameters() == c.num_parameters());
  CHECK(preset.num_activated_parameters() == c.num_activated_parameters());
  CHECK(preset.to_json_string() == c.to_json_string());
}

TEST_CASE("quantization_config other than FP8 E4M3 blocks is refused", "[checkpoint][published][hostile]") {
  nlohmann::json j = nlohmann::json::parse(micro_config().to_json_string());
  const auto refused = [&](const nlohmann::json& q, const std::string& message) {
    j["quantization_config"] = q;
    CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(j.dump()), Catch::Contains(message));
  };
  refused({{"quant_method", "gptq"}, {"weight_block_size", {128, 128}}}, "key 'quant_method' is 'gptq'");
  refused({{"quant_method", "fp8"}, {"fmt", "e5m2"}, {"weight_block_size", {128, 128}}}, "key 'fmt' is 'e5m2'");
  refused({{"quant_method", "fp8"}, {"weight_block_size", {128}}}, "'weight_block_size' must be two positive integers");
  refused({{"quant_method", "fp8"}, {"weight_block_size", {0, 128}}}, "'weight_block_size' must be two positive integers");
  refused({{"quant_method", "fp8"}}, "key 'weight_block_size' missing");
}

TEST_CASE("a sharded FP8 directory with block scales loads the dequantised weights exactly", "[checkpoint][published][fp8]") {
  TempDir tmp;
  manual_seed(11);
  DeepSeekV3 reference_model(micro_config());
  reference_model.save_pretrained((tmp.path / "f32").string());
  const std::map<std::string, Tensor> stored = io::load_safetensors(tmp / "f32/model.safetensors");

  // Linear weights become E4M3 codes with one float32 scale per [2, 3] block (the 8-wide matrices
  // then end in a partial 2-column block, 6-row ones have 3 full row blocks); everything else stays F32.
  const io::Fp8BlockSize block{2, 3};
  std::mt19937 random(5);
  std::uniform_int_distribution<int> any_code(0, 255);
  std::uniform_real_distribution<float> any_scale(0.001f, 0.1f);
  std::vector<RawTensor> files[3];
  std::map<std::string, Tensor> expected;
  int quantized = 0;
  size_t next_shard = 0;
  for (const auto& [name, t] : stored) {
    std::vector<RawTensor>& shard = files[next_shard++ % 3];
    if (!is_fp8_linear(name, t)) {
      shard.push_back({name, "F32", t.shape(), latent::testing::f32_bytes(t.to_vector<float>())});
      expected[name] = t;
      continue;
    }
    ++quantized;
    const int64_t rows = t.size(0), cols = t.size(1);
    const int64_t block_rows = (rows + block.rows - 1) / block.rows, block_cols = (cols + block.cols - 1) / block.cols;
    std::string codes;
    for (int64_t i = 0; i < rows * cols; ++i) {
      int code;
      do code = any_code(random);
      while ((code & 0x7F) == 0x7F);  // not NaN
      codes.push_back(static_cast<char>(code));
    }
    std::vector<float> scales(static_cast<size_t>(block_rows * block_cols));
    for (float& s : scales) s = any_scale(random);
    std::vector<float> values(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)  // the product of a 4-bit and a 24-bit significand is exact in double
        values[static_cast<size_t>(r * cols + c)] = static_cast<float>(
            e4m3_value(static_cast<uint8_t>(codes[static_cast<size_t>(r * cols + c)])) *
            scales[static_cast<size_t>((r / block.rows) * block_cols + c / block.cols)]);
    shard.push_back({name, "F8_E4M3", t.shape(), codes});
    shard.push_back({io::fp8_scale_name(name), "F32", {block_rows, block_cols}, latent::testing::f32_bytes(scales)});
    expected[name] = from_vector(values, t.shape());
  }
  REQUIRE(quantized >= 10);

  const fs::path dir = tmp.path / "fp8";
  fs::create_directories(dir);
  nlohmann::json config = nlohmann::json::parse(micro_config().to_json_string());
  config["quantization_config"] = {
      {"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"}, {"weight_block_size", {2, 3}}};
  write_text(dir / "config.json", config.dump());
  nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
  uint64_t total_size = 0;  // bytes of tensor data, as the index must say
  for (int i = 0; i < 3; ++i) {
    const std::string file = fmt::format("model-{:05d}-of-00003.safetensors", i + 1);
    write_text(dir / file, latent::testing::raw_safetensors(files[i], {{"format", "pt"}}));
    for (const RawTensor& t : files[i]) {
      index["weight_map"][t.name] = file;
      total_size += t.bytes.size();
    }
  }
  index["metadata"] = {{"total_size", total_size}};
  write_text(dir / "model.safetensors.index.json", index.dump(2));

  const auto loaded = DeepSeekV3::from_pretrained(dir.string());
  const auto state = loaded->state_dict();
  for (const auto& [name, t] : state) {
    INFO(name);
    REQUIRE(expected.count(name));
    CHECK(t.to_vector<float>() == expected.at(name).to_vector<float>());
  }
  // The same parameters set directly give bitwise the same logits.
  DeepSeekV3 direct(micro_config());
  std::map<std::string, Tensor> direct_state;
  for (const auto& [name, t] : state) direct_state[name] = expected.at(name);
  direct.load_state_dict(direct_state);
  const Tensor ids = from_vector<int64_t>({1, 5, 9, 2, 15, 0, 7, 3}, {1, 8});
  CHECK(loaded->forward(ids).to_vector<float>() == direct.forward(ids).to_vector<float>());

  // A bfloat16 model takes the same directory (FP8 weights scaled in a temporary, then rounded once).
  DeepSeekV3 half(micro_config());
  half.to(kBFloat16);
  models::load_checkpoint(half, models::ModelDirectoryTensors(dir.string(), "test", &block), half.checkpoint_layout(), "test");
  for (const auto& [name, t] : state) {
    INFO(name);
    CHECK(half.state_dict().at(name).to_vector<float>() == t.to(kBFloat16).to_vector<float>());
  }

  SECTION("a shard missing from the directory is refused by name") {
    fs::remove(dir / "model-00002-of-00003.safetensors");
    CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir.string()),
                      Catch::Contains("lists shard 'model-00002-of-00003.safetensors', which is missing"));
  }
}

TEST_CASE("load_checkpoint reports every problem of a directory at once and changes nothing", "[checkpoint][shards]") {
  TempDir tmp;
  manual_seed(21);
  DeepSeekV3 source(micro_config());
  manual_seed(22);
  DeepSeekV3 target(micro_config());
  std::map<std::string, std::vector<float>> before;
  for (const auto& [name, t] : target.state_dict()) before[name] = t.to_vector<float>();
  const auto unchanged = [&] {
    for (const auto& [name, t] : target.state_dict()) {
      INFO(name);
      CHECK(t.to_vector<float>() == before.at(name));
    }
  };

  const std::string dir = (tmp.path / "broken").string();
  fs::create_directories(dir);
  std::map<std::string, Tensor> state = source.state_dict();
  state.erase("model.norm.weight");
  state["model.layers.0.mlp.down_proj.weight"] = zeros({8, 11});
  state["extra.weight"] = zeros({2});
  io::save_model_weights(dir, state, {}, 1024);
  CHECK_THROWS_WITH(models::load_checkpoint(target, models::ModelDirectoryTensors(dir, "test", nullptr), {}, "test"),
                    Catch::Contains("load_state_dict: missing keys: model.norm.weight; unexpected keys: extra.weight; "
                                    "shape mismatches: model.layers.0.mlp.down_proj.weight (checkpoint [8, 11], model [8, 12]);"));
  unchanged();

  // An MTP copy of the embedding without the embedding, or of another shape.
  state = source.state_dict();
  state["model.layers.2.embed_tokens.weight"] = state.at("model.embed_tokens.weight");
  state.erase("model.embed_tokens.weight");
  io::save_model_weights(dir, state, {}, 1024);
  CHECK_THROWS_WITH(models::load_checkpoint(target, models::ModelDirectoryTensors(dir, "test", nullptr),
                                            target.checkpoint_layout(), "test"),
                    Catch::Contains("test: 'model.layers.2.embed_tokens.weight' present but 'model.embed_tokens.weight' missing"));
  state["model.embed_tokens.weight"] = source.state_dict().at("model.embed_tokens.weight");
  state["model.layers.2.embed_tokens.weight"] = zeros({16, 7});
  io::save_model_weights(dir, state, {}, 1024);
  CHECK_THROWS_WITH(models::load_checkpoint(target, models::ModelDirectoryTensors(dir, "test", nullptr),
                                            target.checkpoint_layout(), "test"),
                    Catch::Contains("'model.layers.2.embed_tokens.weight' [16, 7] differs from 'model.embed_tokens.weight' [16, 8]"));
  unchanged();

  // Complete: every value arrives, and an MTP copy that differs in one value is caught.
  source.save_pretrained(dir, models::SaveOptions{.max_shard_bytes = 1024});
  models::load_checkpoint(target, models::ModelDirectoryTensors(dir, "test", nullptr), target.checkpoint_layout(), "test");
  for (const auto& [name, t] : source.state_dict()) {
    INFO(name);
    CHECK(target.state_dict().at(name).to_vector<float>() == t.to_vector<float>());
  }
  state = source.state_dict();
  state["model.layers.2.shared_head.head.weight"] = state.at("lm_head.weight").clone();
  state["model.layers.2.embed_tokens.weight"] = state.at("model.embed_tokens.weight");
  state["model.layers.2.shared_head.head.weight"].data<float>()[5] += 1;
  io::save_model_weights(dir, state, {}, 1024);
  CHECK_THROWS_WITH(DeepSeekV3::from_pretrained(dir),
                    Catch::Contains("from_pretrained: 'model.layers.2.shared_head.head.weight' differs from 'lm_head.weight'; "
                                    "the MTP module must share them"));
}

TEST_CASE("save_pretrained with a shard size writes shards that from_pretrained loads back", "[checkpoint][shards]") {
  TempDir tmp;
  manual_seed(3);
  DeepSeekV3 model(micro_config());
  const std::string dir = (tmp.path / "sharded").string();
  model.save_pretrained(dir, models::SaveOptions{.max_shard_bytes = 1024});
  CHECK(fs::exists(fs::path(dir) / "model.safetensors.index.json"));
  CHECK(!fs::exists(fs::path(dir) / "model.safetensors"));
  const auto index = io::read_json_file((fs::path(dir) / "model.safetensors.index.json").string());
  const std::string shard = index.at("weight_map").at("model.norm.weight").get<std::string>();
  INFO(shard);
  CHECK(shard.starts_with("model-000"));  // model-0000i-of-0000N, N > 1
  CHECK(shard.ends_with(".safetensors"));
  const auto loaded = DeepSeekV3::from_pretrained(dir);
  const auto a = model.state_dict(), b = loaded->state_dict();
  for (const auto& [name, t] : a) {
    INFO(name);
    CHECK(b.at(name).to_vector<float>() == t.to_vector<float>());
  }
  // Saving the same directory as one file afterwards leaves no shard behind to confuse a load.
  model.save_pretrained(dir);
  for (const auto& entry : fs::directory_iterator(dir)) CHECK(!entry.path().filename().string().starts_with("model-"));
  CHECK(!fs::exists(fs::path(dir) / "model.safetensors.index.json"));
  CHECK(DeepSeekV3::from_pretrained(dir)->state_dict().at("model.norm.weight").to_vector<float>() ==
        a.at("model.norm.weight").to_vector<float>());
}

TEST_CASE("the twin's published-layout checkpoint (FP8 blocks, BF16, three shards) gives the twin's values",
          "[checkpoint][published][twin]") {
  // tests/data/dsv3-published: written by tests/data/make_published.py, expected values from
  // bench/dsv3_torch.py in float64 on exactly the stored (dequantised) weights.
  const latent::testing::DeepSeekFixture f = latent::testing::load_deepseek_fixture("dsv3-published");
  models::DeepSeekV3& model = *f.model;
  REQUIRE(model.config().quantization_config);
  CHECK(model.config().quantization_config->weight_block_size.rows == 16);
  const Tensor ids = f.inputs.at("input_ids");
  const int64_t T = ids.size(1) - 1;
  constexpr double kTol = 1e-4;  // float32 against float64, as the other DeepSeek fixtures
  {
    NoGradGuard no_grad;
    latent::testing::require_close(model.forward(narrow(ids, 1, 0, T)), f.expected.at("logits"), kTol);
  }
  const auto losses = model.loss(ids, f.mtp_lambda);
  CHECK(losses.ce.item() == Approx(f.expected.at("loss_ce").item()).margin(kTol));
  CHECK(losses.balance.item() == Approx(f.expected.at("loss_balance").item()).margin(kTol));
  CHECK(losses.mtp.item() == Approx(f.expected.at("loss_mtp").item()).margin(kTol));
  CHECK(losses.total.item() == Approx(f.expected.at("loss_total").item()).margin(kTol));
  const Tensor prompt = f.inputs.at("prompt_ids");
  const Tensor greedy = model.generate(prompt, {.max_new_tokens = 8});
  CHECK(greedy.to_vector<int64_t>() == f.expected.at("greedy_ids").to_vector<int64_t>());
}

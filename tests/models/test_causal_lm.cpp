// The CausalLM interface: DeepSeek-V3 and Llama behind it (named loss terms, routing statistics, the
// shared generation loop against the fixtures' greedy ids), from_pretrained / from_config_file
// dispatch on model_type, and the configs' table-driven keys, enums and derived defaults.
#include <filesystem>
#include <fstream>

#include "../helpers.hpp"
#include "../programs.hpp"

using namespace latent;
using latent::testing::TempDir;
using latent::testing::test_data;
using models::CausalLM;
using models::DeepSeekV3;
using models::DeepSeekV3Config;
using models::Llama;
using models::LlamaConfig;

namespace {

LlamaConfig small_llama() {
  LlamaConfig c;
  c.vocab_size = 32, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 6, c.max_position_embeddings = 32;
  return c;
}

Tensor random_ids(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < batch * length; ++i) ids.push_back(int64_t(gen.uniform(gen.advance(1)) * double(vocab)) % vocab);
  return from_vector(ids, {batch, length});
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

}  // namespace

TEST_CASE("DeepSeek-V3's loss_terms are loss()'s fields, named, in order", "[causal_lm][dsv3]") {
  manual_seed(1);
  DeepSeekV3 model(DeepSeekV3Config::preset("tiny"));
  const Tensor ids = random_ids(2, 9, 256, 7);
  const DeepSeekV3::Losses losses = model.loss(ids, 0.5);
  CausalLM& lm = model;
  const models::LossTerms terms = lm.loss_terms(ids, {0.5});
  REQUIRE(terms.terms.size() == 3);
  CHECK(terms.terms[0].first == "ce");
  CHECK(terms.terms[1].first == "balance");
  CHECK(terms.terms[2].first == "mtp");
  CHECK(terms.total.item() == losses.total.item());
  CHECK(terms.term("ce").item() == losses.ce.item());
  CHECK(terms.term("balance").item() == losses.balance.item());
  CHECK(terms.term("mtp").item() == losses.mtp.item());
  // total = ce + aux_loss_alpha * balance + mtp_lambda * mtp, recomputed here.
  CHECK(terms.total.item() == Approx(losses.ce.item() + 0.01 * losses.balance.item() + 0.5 * losses.mtp.item()).epsilon(1e-6));
  CHECK_THROWS_WITH(terms.term("kl"), Catch::Contains("no term 'kl' (terms: ce, balance, mtp)"));
}

TEST_CASE("routing statistics hand out the loads the bias update reads", "[causal_lm][dsv3]") {
  manual_seed(2);
  DeepSeekV3 model(DeepSeekV3Config::preset("tiny"));
  CausalLM& lm = model;
  CHECK(lm.routing_statistics().empty());  // nothing routed yet
  lm.loss_terms(random_ids(2, 9, 256, 3));
  const std::vector<models::RoutingStatistics> stats = lm.routing_statistics();
  const auto layers = model.moe_layers();
  REQUIRE(stats.size() == layers.size());
  REQUIRE(stats.size() == 3);  // layers 1 and 2, and the MTP module
  for (size_t i = 0; i < stats.size(); ++i) {
    CHECK(stats[i].layer == layers[i].first);
    CHECK(stats[i].loads.to_vector<int64_t>() == model.last_routing()[i].loads.to_vector<int64_t>());
    REQUIRE(stats[i].correction_bias.defined());
    CHECK(stats[i].correction_bias.data<float>() == layers[i].second->gate->e_score_correction_bias.data<float>());
  }
  // Overwriting the loads in place (as an all-reduce does) changes what the update sees:
  // b_i += gamma * sign(mean(load) - load_i), mean 3.5 here.
  for (auto s : stats) s.loads.copy_(from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7}));
  lm.after_optimizer_step(0.25);
  for (const auto& s : stats)
    CHECK(s.correction_bias.to(kFloat64).to_vector<double>() ==
          std::vector<double>{0.25, 0.25, 0.25, 0.25, -0.25, -0.25, -0.25, -0.25});
}

TEST_CASE("Llama's loss_terms is just the cross-entropy; it has no routing", "[causal_lm][llama]") {
  manual_seed(3);
  Llama model(small_llama());
  const Tensor ids = random_ids(2, 7, 32, 5);
  CausalLM& lm = model;
  const models::LossTerms terms = lm.loss_terms(ids);
  REQUIRE(terms.terms.size() == 1);
  CHECK(terms.terms[0].first == "ce");
  CHECK(terms.total.item() == model.loss(ids).item());
  CHECK(terms.term("ce").item() == terms.total.item());
  CHECK_THROWS_WITH(terms.term("balance"), Catch::Contains("no term 'balance' (terms: ce)"));
  CHECK(lm.routing_statistics().empty());
  const std::map<std::string, Tensor> before = model.state_dict();
  std::map<std::string, std::vector<double>> values;
  for (const auto& [name, t] : before) values[name] = t.to(kFloat64).to_vector<double>();
  lm.after_optimizer_step(0.1);  // nothing outside the gradient to update
  for (const auto& [name, t] : model.state_dict()) CHECK(t.to(kFloat64).to_vector<double>() == values.at(name));
  CHECK(lm.model_type() == "llama");
  CHECK(lm.vocab_size() == 32);
  CHECK(lm.max_position_embeddings() == 32);
}

TEST_CASE("generate through the interface gives the fixtures' greedy ids", "[causal_lm][generate][fixture]") {
  for (const char* name : {"dsv3-tiny", "dsv2-softmax", "llama-tiny"}) {
    INFO(name);
    const std::string dir = test_data(name);
    const std::map<std::string, Tensor> inputs = io::load_safetensors(dir + "/inputs.safetensors");
    const std::map<std::string, Tensor> expected = io::load_safetensors(dir + "/expected.safetensors");
    REQUIRE(expected.count("greedy_ids") == 1);
    const std::shared_ptr<CausalLM> model = models::from_pretrained(dir);
    const Tensor prompt = inputs.at("prompt_ids"), greedy = expected.at("greedy_ids");
    models::GenerateOptions options;
    options.max_new_tokens = greedy.numel() - prompt.numel();
    std::vector<int64_t> streamed = prompt.to_vector<int64_t>();
    const Tensor out = model->generate(prompt, options, [&](int64_t token) {
      streamed.push_back(token);
      return true;
    });
    CHECK(out.to_vector<int64_t>() == greedy.to_vector<int64_t>());
    CHECK(streamed == greedy.to_vector<int64_t>());
    // Stopping after the first token.
    const Tensor stopped = model->generate(prompt, options, [](int64_t) { return false; });
    CHECK(stopped.numel() == prompt.numel() + 1);
  }
}

TEST_CASE("the shared loop checks every model's prompt the same way", "[causal_lm][generate][errors]") {
  manual_seed(4);
  DeepSeekV3 deepseek(DeepSeekV3Config::preset("tiny"));
  Llama llama(small_llama());
  for (CausalLM* model : {static_cast<CausalLM*>(&deepseek), static_cast<CausalLM*>(&llama)}) {
    INFO(model->model_type());
    models::GenerateOptions options;
    options.max_new_tokens = 2;
    // Before the loop was shared, DeepSeek-V3 did not check the prompt's dtype.
    CHECK_THROWS_WITH(model->generate(zeros({3}), options), Catch::Contains("prompt must be a non-empty 1-D int64 tensor, got float32"));
    CHECK_THROWS_WITH(model->generate(zeros({0}, kInt64), options), Catch::Contains("non-empty"));
    CHECK_THROWS_WITH(model->generate(from_vector<int64_t>({1, 1000}), options), Catch::Contains("token id 1000 out of range"));
    options.top_k = -1;
    CHECK_THROWS_WITH(model->generate(from_vector<int64_t>({1}), options), Catch::Contains("top_k must be >= 0, got -1"));
    options.top_k = 0;
    options.max_new_tokens = model->max_position_embeddings();
    CHECK_THROWS_WITH(model->generate(from_vector<int64_t>({1}), options),
                      Catch::Contains("exceeds max_position_embeddings " + std::to_string(model->max_position_embeddings())));
    CHECK_THROWS_WITH(model->forward(zeros({1, model->max_position_embeddings() + 1}, kInt64)),
                      Catch::Contains("positions exceed the " + std::to_string(model->max_position_embeddings()) + " available"));
  }
}

TEST_CASE("from_pretrained and from_config_file dispatch on model_type", "[causal_lm][checkpoint]") {
  TempDir tmp("latent-causal-lm");
  manual_seed(5);
  const auto deepseek = std::make_shared<DeepSeekV3>(DeepSeekV3Config::preset("tiny"));
  const auto llama = std::make_shared<Llama>(small_llama());
  const Tensor ids = random_ids(1, 5, 32, 9);
  for (const std::shared_ptr<CausalLM>& original : {std::static_pointer_cast<CausalLM>(deepseek), std::static_pointer_cast<CausalLM>(llama)}) {
    const std::string dir = tmp / original->model_type();
    original->save_pretrained(dir);
    const uint64_t offset = default_generator().offset();
    const std::shared_ptr<CausalLM> loaded = models::from_pretrained(dir);
    CHECK(default_generator().offset() == offset);  // built under SkipInitGuard: nothing drawn, then loaded
    CHECK(loaded->model_type() == original->model_type());
    CHECK((std::dynamic_pointer_cast<DeepSeekV3>(loaded) != nullptr) == (original == deepseek));
    CHECK((std::dynamic_pointer_cast<Llama>(loaded) != nullptr) == (original == llama));
    NoGradGuard no_grad;
    CHECK(loaded->forward(ids).to_vector<float>() == original->forward(ids).to_vector<float>());

    const std::string config = tmp / (original->model_type() + ".json");
    original->config_to_json_file(config);
    const std::shared_ptr<CausalLM> fresh = models::from_config_file(config);
    CHECK(fresh->model_type() == original->model_type());
    CHECK(fresh->num_parameters() == original->num_parameters());
    CHECK(models::num_parameters_of_config_file(config) ==
          (original == llama ? small_llama().num_parameters() : DeepSeekV3Config::preset("tiny").num_parameters()));
  }

  auto config_with_type = [&](const std::string& type_json) {
    auto j = nlohmann::json::parse(small_llama().to_json_string());
    if (type_json.empty()) j.erase("model_type");
    else j["model_type"] = nlohmann::json::parse(type_json);
    write_text(tmp / "llama/config.json", j.dump());
  };
  config_with_type("\"mistral\"");
  CHECK_THROWS_WITH(models::from_pretrained(tmp / "llama"),
                    Catch::Contains("key 'model_type' is 'mistral'; latent builds 'deepseek_v3', 'deepseek_v2' or 'llama'"));
  CHECK_THROWS_WITH(models::from_config_file(tmp / "llama/config.json"), Catch::Contains("'mistral'"));
  config_with_type("");
  CHECK_THROWS_WITH(models::from_pretrained(tmp / "llama"), Catch::Contains("key 'model_type' missing"));
  config_with_type("3");
  CHECK_THROWS_WITH(models::from_pretrained(tmp / "llama"), Catch::Contains("key 'model_type' must be a string"));
  CHECK_THROWS_WITH(models::from_pretrained(tmp / "absent"), Catch::Contains("is not a directory"));
  // A V2-style directory opens as DeepSeekV3.
  const std::shared_ptr<CausalLM> v2 = models::from_pretrained(test_data("dsv2-softmax"));
  CHECK(v2->model_type() == "deepseek_v2");
  CHECK(std::dynamic_pointer_cast<DeepSeekV3>(v2) != nullptr);
}

TEST_CASE("a LlamaConfig filled in from C++ applies its own defaults", "[causal_lm][llama][config]") {
  LlamaConfig derived = small_llama();
  derived.num_key_value_heads = 0, derived.head_dim = 0;  // "as transformers derives them"
  LlamaConfig explicit_ = small_llama();
  explicit_.num_key_value_heads = 4, explicit_.head_dim = 16 / 4;

  const LlamaConfig resolved = derived.resolved();
  CHECK(resolved.num_key_value_heads == 4);
  CHECK(resolved.head_dim == 4);
  CHECK_NOTHROW(derived.validate());
  CHECK(derived.num_parameters() == explicit_.num_parameters());
  CHECK(derived.to_json_string() == explicit_.to_json_string());

  manual_seed(6);
  Llama from_derived(derived);
  manual_seed(6);
  Llama from_explicit(explicit_);
  CHECK(from_derived.config().head_dim == 4);
  CHECK(from_derived.config().num_key_value_heads == 4);
  CHECK(from_derived.model->layers->at<models::LlamaDecoderLayer>(0)->self_attn->k_proj->weight.shape() == Shape{16, 16});
  const Tensor ids = random_ids(1, 6, 32, 2);
  NoGradGuard no_grad;
  CHECK(from_derived.forward(ids).to_vector<float>() == from_explicit.forward(ids).to_vector<float>());

  LlamaConfig indivisible = derived;
  indivisible.hidden_size = 18;
  CHECK_THROWS_WITH(Llama(indivisible), Catch::Contains("LlamaConfig: key 'hidden_size' (18) must be divisible by num_attention_heads (4)"));
  LlamaConfig negative = small_llama();
  negative.head_dim = -2;
  CHECK_THROWS_WITH(negative.validate(), Catch::Contains("LlamaConfig: key 'head_dim' must be positive, got -2"));
}

TEST_CASE("scoring_func and topk_method are enums with their config.json spellings", "[causal_lm][dsv3][config]") {
  using models::ScoringFunc;
  using models::TopkMethod;
  CHECK(models::to_string(ScoringFunc::kSoftmax) == "softmax");
  CHECK(models::to_string(TopkMethod::kGroupLimitedGreedy) == "group_limited_greedy");
  CHECK(fmt::format("{}", TopkMethod::kNoauxTc) == "noaux_tc");

  const DeepSeekV3Config v2 = DeepSeekV3Config::from_json_file(test_data("dsv2-softmax/config.json"));
  CHECK(v2.scoring_func == ScoringFunc::kSoftmax);
  CHECK(v2.topk_method == TopkMethod::kGroupLimitedGreedy);
  const auto written = nlohmann::json::parse(v2.to_json_string());
  CHECK(written.at("scoring_func") == "softmax");
  CHECK(written.at("topk_method") == "group_limited_greedy");
  CHECK(DeepSeekV3Config::from_json_string(v2.to_json_string()).to_json_string() == v2.to_json_string());

  auto with = [&](const char* key, const nlohmann::json& value) {
    auto j = written;
    if (value.is_null()) j.erase(key);
    else j[key] = value;
    return j.dump();
  };
  CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(with("scoring_func", "relu"), "v2/config.json"),
                    Catch::Contains("v2/config.json: key 'scoring_func' is 'relu'; allowed: 'sigmoid', 'softmax'"));
  CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(with("topk_method", "best")),
                    Catch::Contains("key 'topk_method' is 'best'; allowed: 'noaux_tc', 'greedy', 'group_limited_greedy'"));
  CHECK_THROWS_WITH(DeepSeekV3Config::from_json_string(with("topk_method", 2)), Catch::Contains("key 'topk_method' must be a string"));
  // A softmax config without topk_method is V2's greedy router; a sigmoid one V3's noaux_tc.
  CHECK(DeepSeekV3Config::from_json_string(with("topk_method", nullptr)).topk_method == TopkMethod::kGreedy);
  auto v3 = nlohmann::json::parse(DeepSeekV3Config::preset("tiny").to_json_string());
  v3.erase("topk_method");
  CHECK(DeepSeekV3Config::from_json_string(v3.dump()).topk_method == TopkMethod::kNoauxTc);
}

TEST_CASE("the key tables read back what they write, null where HF writes null", "[causal_lm][config]") {
  for (const char* preset : {"tiny", "small", "deepseek-v3-671b"}) {
    DeepSeekV3Config c = DeepSeekV3Config::preset(preset);
    CHECK(DeepSeekV3Config::from_json_string(c.to_json_string()).to_json_string() == c.to_json_string());
    c.q_lora_rank = 0;
    CHECK(nlohmann::json::parse(c.to_json_string()).at("q_lora_rank").is_null());
    CHECK(DeepSeekV3Config::from_json_string(c.to_json_string()).q_lora_rank == 0);
  }
  LlamaConfig l = small_llama();
  l.tie_word_embeddings = true, l.attention_bias = true, l.rope_theta = 5e5;
  const LlamaConfig back = LlamaConfig::from_json_string(l.to_json_string());
  CHECK(back.to_json_string() == l.to_json_string());
  CHECK(back.tie_word_embeddings);
  CHECK(back.attention_bias);
  CHECK(back.rope_theta == 5e5);
  CHECK(back.head_dim == 6);
}

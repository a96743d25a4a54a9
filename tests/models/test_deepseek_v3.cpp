// DeepSeek-V3 components: f64 gradchecks of MLA, an MoE layer, the MTP module and the whole model's
// total loss; absorbed-cache decoding against the training form; routing invariants; checkpoints.
#include <cstring>
#include <filesystem>
#include <numeric>

#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;
using models::DeepSeekV3Config;

namespace {

std::shared_ptr<const nn::RotaryEmbedding> rope_of(const DeepSeekV3Config& c) {
  return std::make_shared<nn::RotaryEmbedding>(c.qk_rope_head_dim, c.max_position_embeddings, c.rope_theta, c.rope_scaling);
}

DeepSeekV3Config small_tiny() {  // the tiny preset, shrunk further so f64 gradchecks take seconds
  DeepSeekV3Config c = DeepSeekV3Config::preset("tiny");
  c.hidden_size = 16, c.intermediate_size = 24, c.moe_intermediate_size = 8, c.num_attention_heads = 2;
  c.q_lora_rank = 12, c.kv_lora_rank = 8, c.qk_nope_head_dim = 4, c.qk_rope_head_dim = 4, c.v_head_dim = 6;
  c.vocab_size = 32, c.num_hidden_layers = 2, c.initializer_range = 0.3;
  return c;
}

}  // namespace

TEST_CASE("MLA (training form, YaRN) passes gradcheck in f64", "[dsv3][gradcheck]") {
  const DeepSeekV3Config c = small_tiny();
  manual_seed(1);
  for (int64_t q_lora : {c.q_lora_rank, int64_t{0}}) {
    DeepSeekV3Config config = c;
    config.q_lora_rank = q_lora;
    models::MultiHeadLatentAttention mla(config, rope_of(config));
    mla.to(kFloat64);
    const Tensor x = randn64({2, 5, config.hidden_size}, 3);
    CHECK(autograd::gradcheck_module(mla, [&](const std::vector<Tensor>& in) { return mla.forward(in[0]); }, {x},
                                     {.atol = 1e-6, .rtol = 1e-6}));
  }
}

TEST_CASE("an MoE layer passes gradcheck in f64 (routing fixed by the data)", "[dsv3][gradcheck]") {
  for (const char* method : {"noaux_tc", "group_limited_greedy"}) {
    DeepSeekV3Config c = small_tiny();
    if (std::string(method) != "noaux_tc") c.scoring_func = models::ScoringFunc::kSoftmax, c.topk_method = models::TopkMethod::kGroupLimitedGreedy;
    manual_seed(2);
    models::DeepSeekMoE moe(c);
    moe.to(kFloat64);
    if (moe.gate->e_score_correction_bias.defined())
      moe.gate->e_score_correction_bias.copy_(from_vector<double>({0.1, -0.2, 0.05, 0, 0.3, -0.1, 0.2, -0.05}));
    const Tensor x = randn64({2, 4, c.hidden_size}, 4);
    // Output and balance loss together, so the gradient through the scores is checked too.
    auto f = [&](const Tensor& in) { return moe.forward(in) + moe.last_stats().balance; };
    CHECK(autograd::gradcheck_module(moe, [&](const std::vector<Tensor>& in) { return f(in[0]); }, {x},
                                     {.atol = 1e-6, .rtol = 1e-6}));
  }
}

TEST_CASE("the MTP module passes gradcheck in f64", "[dsv3][gradcheck]") {
  const DeepSeekV3Config c = small_tiny();
  manual_seed(3);
  models::MTPLayer mtp(c, rope_of(c));
  mtp.to(kFloat64);
  const Tensor e = randn64({1, 4, c.hidden_size}, 5), h = randn64({1, 4, c.hidden_size}, 6);
  CHECK(autograd::gradcheck_module(mtp, [&](const std::vector<Tensor>& in) { return mtp.forward(in[0], in[1]); },
                                   {e, h}, {.atol = 1e-6, .rtol = 1e-6, .max_per_input = 6}));
}

TEST_CASE("the whole model's total loss passes gradcheck in f64", "[dsv3][gradcheck]") {
  DeepSeekV3Config c = small_tiny();
  c.num_nextn_predict_layers = 2;
  c.aux_loss_alpha = 0.1;  // large enough that the balance term matters to the check
  manual_seed(4);
  models::DeepSeekV3 model(c);
  model.to(kFloat64);
  const Tensor ids = from_vector<int64_t>({3, 17, 5, 9, 31, 0, 12, 7, 7, 2, 19, 4, 25, 8}, {2, 7});
  CHECK(autograd::gradcheck_module(model, [&](const std::vector<Tensor>& in) { return model.loss(in[0], 0.3).total; },
                                   {ids}, {.atol = 1e-6, .rtol = 1e-6, .max_per_input = 4}));
}

TEST_CASE("absorbed-cache decoding equals the training form for every prefix", "[dsv3][cache]") {
  for (const char* fixture : {"dsv3-tiny", "dsv3-variant"}) {
    INFO(fixture);
    auto model = models::DeepSeekV3::from_pretrained(latent::testing::test_data(fixture));
    const Tensor ids = narrow(io::load_safetensors(latent::testing::test_data(std::string(fixture) + "/inputs.safetensors")).at("input_ids"), 1, 0, 20);
    NoGradGuard no_grad;
    const Tensor full = model->forward(ids);
    // One token at a time, and a prefill of 7 then chunks of 5, 1, 7.
    for (const std::vector<int64_t>& chunks : {std::vector<int64_t>(20, 1), std::vector<int64_t>{7, 5, 1, 7}}) {
      auto caches = model->make_caches(2, 20);
      int64_t at = 0;
      for (int64_t n : chunks) {
        require_close(model->forward_absorbed(narrow(ids, 1, at, n), caches), narrow(full, 1, at, n).contiguous(), 1e-4);
        at += n;
      }
    }
  }
}

TEST_CASE("the latent cache holds kv_lora_rank + qk_rope_head_dim floats per token per layer", "[dsv3][cache]") {
  models::DeepSeekV3 model(DeepSeekV3Config::preset("tiny"));
  auto caches = model.make_caches(1, 10);
  CHECK(caches.size() == 3);
  CHECK(caches[0].floats_per_token() == 16 + 8);
  const auto big = DeepSeekV3Config::preset("deepseek-v3-671b");
  CHECK(big.kv_lora_rank + big.qk_rope_head_dim == 576);
  CHECK_THROWS_WITH(model.make_caches(1, 1000), Catch::Contains("max_position_embeddings"));
}

TEST_CASE("routing: group limits, bias only for selection, idle experts cost nothing", "[dsv3][moe]") {
  DeepSeekV3Config c = small_tiny();
  manual_seed(5);
  models::DeepSeekMoE moe(c);
  const Tensor x = randn({3, 6, c.hidden_size});
  // A huge bias on expert 0 makes every token pick it, but its weight still comes from the unbiased score.
  moe.gate->e_score_correction_bias.copy_(from_vector<float>({100, 0, 0, 0, 0, 0, 0, 0}));
  const auto routing = moe.gate->route(reshape(x, {18, c.hidden_size}));
  const std::vector<int64_t> ids = routing.expert_ids.to_vector<int64_t>();
  const std::vector<float> scores = routing.scores.to_vector<float>(), weights = routing.weights.to_vector<float>();
  for (int64_t n = 0; n < 18; ++n) {
    CHECK(ids[size_t(2 * n)] == 0);
    // The two experts come from the kept groups (2 of 4 groups of 2 experts) and are sorted.
    CHECK(ids[size_t(2 * n)] < ids[size_t(2 * n + 1)]);
    const double s0 = scores[size_t(8 * n)], s1 = scores[size_t(8 * n + ids[size_t(2 * n + 1)])];
    CHECK(weights[size_t(2 * n)] == Approx(2.5 * s0 / (s0 + s1)).epsilon(1e-5));
  }
  // Loads count (token, slot) pairs; experts nobody chose get no gradient at all.
  const Tensor y = moe.forward(x);
  const std::vector<int64_t> loads = moe.last_stats().loads.to_vector<int64_t>();
  CHECK(std::accumulate(loads.begin(), loads.end(), int64_t{0}) == 36);
  CHECK(loads[0] == 18);
  sum(y).backward();
  for (size_t e = 0; e < loads.size(); ++e)
    CHECK(moe.experts->at<nn::SwiGLU>(e)->gate_proj->weight.grad().defined() == (loads[e] > 0));
  // Bias update: overloaded experts go down by gamma, underloaded ones up, the mean stays.
  moe.update_expert_bias(0.01);
  const std::vector<float> b = moe.gate->e_score_correction_bias.to_vector<float>();
  CHECK(b[0] == Approx(99.99));
  for (size_t e = 1; e < loads.size(); ++e) CHECK(b[e] == Approx(loads[e] > 4.5 ? -0.01 : 0.01));
}

TEST_CASE("routing ties go to the lower index, among groups and among experts", "[dsv3][moe]") {
  DeepSeekV3Config c = small_tiny();  // 8 experts in 4 groups of 2, 2 groups kept, top-2
  manual_seed(9);
  models::DeepSeekMoE moe(c);
  {
    NoGradGuard no_grad;
    moe.gate->weight.zero_();  // every score is sigmoid(0) = 0.5: only the bias tells experts apart
  }
  const Tensor x = randn({2, 3, c.hidden_size});
  auto ids_of = [&](const std::vector<float>& bias) {
    moe.gate->e_score_correction_bias.copy_(from_vector<float>(bias));
    return moe.gate->route(reshape(x, {6, c.hidden_size})).expert_ids.to_vector<int64_t>();
  };
  // All tied: groups 0 and 1 are kept, and their experts 0 and 1 chosen.
  CHECK(ids_of({0, 0, 0, 0, 0, 0, 0, 0}) == std::vector<int64_t>{0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1});
  // Group scores (sum of the two best biased scores) 2, 2, 3, 1: group 2, then group 0 over its tie
  // with group 1. Experts 1, 4 and 5 tie at 1.5 among the kept ones: 1 and 4 are chosen.
  CHECK(ids_of({0, 1, 0, 1, 1, 1, 0, 0}) == std::vector<int64_t>{1, 4, 1, 4, 1, 4, 1, 4, 1, 4, 1, 4});
}

TEST_CASE("save_pretrained writes HF names with the MTP copies; from_pretrained restores bitwise", "[dsv3][checkpoint]") {
  const auto dir = std::filesystem::temp_directory_path() / "latent_dsv3_roundtrip";
  std::filesystem::remove_all(dir);
  manual_seed(6);
  models::DeepSeekV3 model(DeepSeekV3Config::preset("tiny"));
  model.save_pretrained(dir.string());
  const auto stored = io::load_safetensors((dir / "model.safetensors").string());
  CHECK(stored.count("model.layers.3.embed_tokens.weight") == 1);
  CHECK(stored.count("model.layers.3.shared_head.head.weight") == 1);
  CHECK(stored.count("model.layers.1.mlp.gate.e_score_correction_bias") == 1);
  CHECK(stored.size() == model.state_dict().size() + 2);
  const auto loaded = models::DeepSeekV3::from_pretrained(dir.string());
  for (auto& [name, t] : model.state_dict()) {
    INFO(name);
    CHECK(loaded->state_dict().at(name).to_vector<float>() == t.to_vector<float>());
  }
  // A copy that disagrees with the main tensor is refused.
  auto tampered = stored;
  tampered["model.layers.3.embed_tokens.weight"] = zeros({256, 64});
  io::save_safetensors((dir / "model.safetensors").string(), tampered);
  CHECK_THROWS_WITH(models::DeepSeekV3::from_pretrained(dir.string()), Catch::Contains("must share"));
  std::filesystem::remove_all(dir);
  CHECK_THROWS_WITH(models::DeepSeekV3::from_pretrained(dir.string()), Catch::Contains("not a directory"));
}

TEST_CASE("bad token ids and lengths are refused with clear errors", "[dsv3][errors]") {
  models::DeepSeekV3 model(DeepSeekV3Config::preset("tiny"));
  CHECK_THROWS_WITH(model.forward(from_vector<int64_t>({1, 256}, {1, 2})), Catch::Contains("token id 256 out of range [0, 256)"));
  CHECK_THROWS_WITH(model.forward(from_vector<int64_t>({-1}, {1, 1})), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(model.forward(zeros({1, 129}, kInt64)), Catch::Contains("129 positions exceed the 128 available"));
  CHECK_THROWS_WITH(model.forward(zeros({1, 4})), Catch::Contains("int64"));
  CHECK_THROWS_WITH(model.loss(zeros({1, 2}, kInt64)), Catch::Contains("too short"));
  CHECK_THROWS_WITH(model.update_expert_bias(0.001), Catch::Contains("call loss() first"));
  models::DeepSeekV3::GenerateOptions options;
  options.max_new_tokens = 200;
  CHECK_THROWS_WITH(model.generate(from_vector<int64_t>({1, 2}), options), Catch::Contains("max_position_embeddings"));
}

// docs/architecture.md, "Threads": same seed + same thread count => bitwise-identical runs. latent goes further: every
// parallel kernel splits work by shape only and sums in a fixed order, so the thread count does not
// change a single bit either. Three full training steps (forward, backward with every kernel's
// parallel path, clipping, AdamW, expert-bias update) must agree exactly at 1 and 2 threads, at
// float32 and at bf16 matmul precision (where it runs: oneDNN's GEMMs are cut into the same
// shape-only blocks), and a second run at the same thread count repeats the first.
TEST_CASE("training steps are bitwise identical at 1 and 2 threads", "[dsv3][determinism]") {
  auto train = [](int threads, MatmulPrecision precision) {
    set_num_threads(threads);
    MatmulPrecisionGuard at(precision);
    DeepSeekV3Config c = DeepSeekV3Config::preset("tiny");
    manual_seed(7);  // initialisation draws from the global generator
    models::DeepSeekV3 model(c);
    optim::AdamW opt(model.parameters(), {.lr = 3e-3});
    Generator data(11);
    for (int step = 0; step < 3; ++step) {
      Tensor ids = randint(0, c.vocab_size, {4, 33}, &data);
      opt.zero_grad();
      model.loss(ids).total.backward();
      optim::clip_grad_norm(model.parameters(), 1.0);
      opt.step();
      model.update_expert_bias(1e-3);
    }
    return model.state_dict();
  };
  auto require_same = [](const std::map<std::string, Tensor>& one, const std::map<std::string, Tensor>& two) {
    REQUIRE(one.size() == two.size());
    for (const auto& [name, t] : one) {
      INFO(name);
      Tensor a = t.contiguous(), b = two.at(name).contiguous();
      REQUIRE(a.numel() == b.numel());
      CHECK(std::memcmp(a.raw_data(), b.raw_data(), static_cast<size_t>(a.numel()) * dtype_size(a.dtype())) == 0);
    }
  };
  const int before = get_num_threads();
  std::vector<MatmulPrecision> precisions = {MatmulPrecision::kHighest};
  std::string why;
  if (bf16_matmul_supported(&why)) precisions.push_back(MatmulPrecision::kBFloat16);
  else WARN("bf16 matmul unavailable, its determinism is not tested here: " << why);
  std::vector<std::map<std::string, Tensor>> finals;
  for (MatmulPrecision precision : precisions) {
    INFO("precision " << matmul_precision_name(precision));
    auto one = train(1, precision), two = train(2, precision), again = train(2, precision);
    require_same(one, two);
    require_same(two, again);
    finals.push_back(std::move(one));
  }
  set_num_threads(before);
  if (finals.size() == 2)  // the bf16 run really ran at another precision
    CHECK(max(abs(finals[0].at("model.embed_tokens.weight") - finals[1].at("model.embed_tokens.weight"))).item() > 0);
}

TEST_CASE("at bf16, absorbed decoding keeps each cache's rounded copy equal to its rows rounded", "[dsv3][cache][bf16]") {
  std::string why;
  if (!bf16_matmul_supported(&why)) {
    WARN("bf16 matmul unavailable here, not tested: " << why);
    return;
  }
  auto model = models::DeepSeekV3::from_pretrained(latent::testing::test_data("dsv3-tiny"));
  const Tensor ids = narrow(io::load_safetensors(latent::testing::test_data("dsv3-tiny/inputs.safetensors")).at("input_ids"), 1, 0, 20);
  NoGradGuard no_grad;
  // A prefill of 7, then one token at a time; tokens 8 to 10 at fp32, whose rows the copy then lacks
  // until bf16 resumes and rounds them.
  auto caches = model->make_caches(2, 20);
  for (int64_t at = 0; at < 20; at += at == 0 ? 7 : 1) {
    const int64_t n = at == 0 ? 7 : 1;
    const bool fp32 = at >= 8 && at <= 10;
    MatmulPrecisionGuard precision(fp32 ? MatmulPrecision::kHighest : MatmulPrecision::kBFloat16);
    model->forward_absorbed(narrow(ids, 1, at, n), caches);
    for (const models::LatentCache& cache : caches) {
      INFO("after position " << at + n - 1);
      if (fp32) {  // the copy stops before the rows written at fp32 and is not attached to their version
        CHECK(cache.rounded_length == 8);
        CHECK(cache.rows.storage()->rounded() == nullptr);
        continue;
      }
      REQUIRE(cache.rounded_length == at + n);
      CHECK(cache.rows.storage()->rounded() == cache.rounded.storage());
      const Tensor expected = narrow(cache.rows, 1, 0, at + n).to(kBFloat16).contiguous();
      const Tensor kept = narrow(cache.rounded, 1, 0, at + n).contiguous();
      CHECK(std::memcmp(kept.raw_data(), expected.raw_data(), static_cast<size_t>(kept.numel()) * 2) == 0);
    }
  }
}

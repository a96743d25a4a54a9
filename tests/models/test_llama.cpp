// Llama: golden values from an independent PyTorch implementation in HF's layout and rotate_half RoPE
// (tests/data/llama-tiny: logits, loss, every gradient, greedy ids), cached decoding against full
// recomputation, sampling, f64 gradients, checkpoint round trips, config refusals, and a small Llama
// learning to reverse sequences of random tokens.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <numeric>

#include "../helpers.hpp"
#include "../raw_safetensors.hpp"

using namespace latent;
using latent::testing::require_close;
using latent::testing::test_data;
using models::Llama;
using models::LlamaConfig;
namespace fs = std::filesystem;

namespace {

constexpr double kTol = 1e-4;  // f32 model against float64 references (tests/data/README.md)

// tests/data/README.md's formula, written out index by index (independent of the library's
// reshape-based conversion): adjacent[h*D + 2i] = hf[h*D + i], adjacent[h*D + 2i + 1] = hf[h*D + i + D/2].
std::vector<double> hf_rows_to_adjacent(const Tensor& hf, int64_t heads, int64_t D) {
  const std::vector<double> in = hf.to(kFloat64).to_vector<double>();
  const int64_t columns = hf.numel() / hf.size(0);
  std::vector<double> out(in.size());
  auto copy_row = [&](int64_t from, int64_t to) {
    std::copy_n(in.begin() + from * columns, columns, out.begin() + to * columns);
  };
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < D / 2; ++i) {
      copy_row(h * D + i, h * D + 2 * i);
      copy_row(h * D + i + D / 2, h * D + 2 * i + 1);
    }
  return out;
}

// Heads of a q_proj / k_proj tensor (whose rows the loader reorders), 0 for any other tensor.
int64_t rope_heads(const std::string& name, const LlamaConfig& c) {
  if (name.find("q_proj") != std::string::npos) return c.num_attention_heads;
  if (name.find("k_proj") != std::string::npos) return c.num_key_value_heads;
  return 0;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.raw_data(), y.raw_data(), static_cast<size_t>(x.numel()) * dtype_size(x.dtype())) == 0;
}

void require_same_state(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) {
    INFO(name);
    REQUIRE(b.count(name) == 1);
    CHECK(same_bits(t, b.at(name)));
  }
}

std::string temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("latent_test_llama_" + name);
  fs::remove_all(dir);
  return dir.string();
}

LlamaConfig small_config() {  // head_dim 6 differs from hidden / heads = 4, GQA with groups of 2
  LlamaConfig c;
  c.vocab_size = 19, c.hidden_size = 16, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 6, c.max_position_embeddings = 32;
  c.rms_norm_eps = 1e-5, c.initializer_range = 0.3;
  return c;
}

// Makes every parameter of a fresh model non-trivial (biases start at 0, norms at 1).
void randomize(nn::Module& model, uint64_t seed) {
  Generator gen(seed);
  NoGradGuard no_grad;
  for (auto& p : model.parameters()) p.copy_(randn(p.shape(), p.dtype(), &gen) * 0.3 + (p.dim() == 1 ? 1.0 : 0.0));
}

// Greedy decoding by recomputing the whole sequence for every token.
std::vector<int64_t> greedy_by_recompute(Llama& model, std::vector<int64_t> tokens, int64_t new_tokens) {
  NoGradGuard no_grad;
  for (int64_t step = 0; step < new_tokens; ++step) {
    const int64_t T = static_cast<int64_t>(tokens.size());
    const Tensor logits = model.forward(from_vector(tokens, {1, T}));
    const std::vector<float> last = narrow(logits, 1, T - 1, 1).to_vector<float>();
    tokens.push_back(std::max_element(last.begin(), last.end()) - last.begin());
  }
  return tokens;
}

struct Fixture {
  std::shared_ptr<Llama> model;
  std::map<std::string, Tensor> weights, inputs, expected;
};

Fixture load_fixture() {
  Fixture f;
  f.model = Llama::from_pretrained(test_data("llama-tiny"));
  f.weights = io::load_safetensors(test_data("llama-tiny/model.safetensors"));
  f.inputs = io::load_safetensors(test_data("llama-tiny/inputs.safetensors"));
  f.expected = io::load_safetensors(test_data("llama-tiny/expected.safetensors"));
  return f;
}

}  // namespace

TEST_CASE("llama-tiny: logits, loss, every gradient and greedy ids match the HF-layout reference", "[llama][fixture]") {
  Fixture f = load_fixture();
  Llama& model = *f.model;
  const LlamaConfig& c = model.config();
  const Tensor ids = f.inputs.at("input_ids");

  SECTION("q/k rows are held in adjacent-pair order; every other tensor as stored") {
    for (const auto& [name, p] : model.named_parameters()) {
      INFO(name);
      const int64_t heads = rope_heads(name, c);
      if (heads > 0) require_close(p, hf_rows_to_adjacent(f.weights.at(name), heads, c.head_dim), 0);
      else CHECK(same_bits(p, f.weights.at(name)));
    }
    require_same_state(model.hf_state_dict(), f.weights);
  }

  SECTION("logits") {
    NoGradGuard no_grad;
    require_close(model.forward(ids), f.expected.at("logits"), kTol);
  }

  SECTION("loss and the gradient of every parameter") {
    const Tensor loss = model.loss(ids);
    CHECK(loss.dim() == 0);
    CHECK(loss.item() == Approx(f.expected.at("loss_ce").item()).margin(kTol));
    loss.backward();
    int checked = 0;
    for (const auto& [name, p] : model.named_parameters()) {
      INFO("gradient of " << name);
      REQUIRE(p.grad().defined());
      const Tensor& expected = f.expected.at("grad." + name);
      const int64_t heads = rope_heads(name, c);
      // The reference differentiates HF-layout rows; ours are the adjacent-pair permutation of them.
      if (heads > 0) require_close(p.grad(), hf_rows_to_adjacent(expected, heads, c.head_dim), kTol);
      else require_close(p.grad(), expected, kTol);
      ++checked;
    }
    CHECK(checked == 21);
  }

  SECTION("greedy generation with the KV cache") {
    const Tensor prompt = f.inputs.at("prompt_ids"), greedy = f.expected.at("greedy_ids");
    Llama::GenerateOptions options;
    options.max_new_tokens = greedy.numel() - prompt.numel();
    CHECK(model.generate(prompt, options).to_vector<int64_t>() == greedy.to_vector<int64_t>());
    CHECK(greedy_by_recompute(model, prompt.to_vector<int64_t>(), options.max_new_tokens) == greedy.to_vector<int64_t>());
  }
}

TEST_CASE("the row conversions are the README permutation and invert each other", "[llama]") {
  Generator gen(11);
  const Tensor w = randn({3 * 8, 5}, kFloat32, &gen), bias = randn({2 * 6}, kFloat64, &gen);
  const Tensor adjacent = models::rotate_half_rows_to_adjacent(w, 3, 8);
  require_close(adjacent, hf_rows_to_adjacent(w, 3, 8), 0);
  CHECK(same_bits(models::adjacent_rows_to_rotate_half(adjacent, 3, 8), w));
  const Tensor adjacent_bias = models::rotate_half_rows_to_adjacent(bias, 2, 6);
  require_close(adjacent_bias, hf_rows_to_adjacent(bias, 2, 6), 0);
  CHECK(same_bits(models::adjacent_rows_to_rotate_half(adjacent_bias, 2, 6), bias));
  CHECK_THROWS_WITH(models::rotate_half_rows_to_adjacent(w, 4, 8), Catch::Contains("4 heads x 8 rows, got [24, 5]"));
  CHECK_THROWS_WITH(models::adjacent_rows_to_rotate_half(w, 8, 3), Catch::Contains("head_dim even"));
}

TEST_CASE("decoding with the KV cache equals full recomputation", "[llama][cache]") {
  auto model = Llama::from_pretrained(test_data("llama-tiny"));
  Generator gen(21);
  const Tensor ids = randint(0, 256, {2, 40}, &gen);
  NoGradGuard no_grad;
  const Tensor full = model->forward(ids);
  for (const std::vector<int64_t>& chunks : {std::vector<int64_t>(40, 1), std::vector<int64_t>{7, 1, 1, 5, 1, 25}}) {
    auto caches = model->make_caches(40);
    int64_t at = 0;
    for (int64_t n : chunks) {
      INFO("positions " << at << " .. " << at + n - 1);
      require_close(model->forward(narrow(ids, 1, at, n), caches), narrow(full, 1, at, n).contiguous(), 1e-5);
      at += n;
    }
    CHECK(caches[0].length() == 40);
    CHECK_THROWS_WITH(model->forward(narrow(ids, 1, 0, 1), caches), Catch::Contains("exceed the 0 available"));
  }

  // Beyond the fixture's 12 tokens: 40 greedy tokens, cached against recomputed.
  const Tensor prompt = narrow(ids, 0, 0, 1).reshape({40}).narrow(0, 0, 6);
  Llama::GenerateOptions options;
  options.max_new_tokens = 40;
  CHECK(model->generate(prompt, options).to_vector<int64_t>() ==
        greedy_by_recompute(*model, prompt.to_vector<int64_t>(), 40));

  auto caches = model->make_caches(8);
  CHECK(caches.size() == 2);
  CHECK_THROWS_WITH(model->make_caches(65), Catch::Contains("max_position_embeddings 64"));
  caches.pop_back();
  CHECK_THROWS_WITH(model->forward(narrow(ids, 1, 0, 1), caches), Catch::Contains("1 KV caches for 2 layers"));
}

TEST_CASE("sampling: seeded, within the top k, distributed as softmax(logits / temperature)", "[llama][generate]") {
  auto model = Llama::from_pretrained(test_data("llama-tiny"));
  const Tensor prompt = io::load_safetensors(test_data("llama-tiny/inputs.safetensors")).at("prompt_ids");
  Llama::GenerateOptions options;
  options.max_new_tokens = 20, options.temperature = 0.9, options.top_k = 5, options.seed = 7;
  const std::vector<int64_t> sampled = model->generate(prompt, options).to_vector<int64_t>();
  CHECK(model->generate(prompt, options).to_vector<int64_t>() == sampled);
  REQUIRE(sampled.size() == 28);
  {
    NoGradGuard no_grad;
    const Tensor logits = model->forward(from_vector(sampled, {1, 28}));
    for (size_t t = 8; t < sampled.size(); ++t) {  // token t was drawn from the logits at position t - 1
      std::vector<float> row = narrow(logits, 1, int64_t(t) - 1, 1).to_vector<float>();
      const float chosen = row[size_t(sampled[t])];
      std::sort(row.rbegin(), row.rend());
      INFO("token " << t);
      CHECK(chosen >= row[4]);
    }
  }

  // top_k = 1 is greedy whatever the temperature; temperature 0 ignores top_k and the seed.
  options.top_k = 1;
  Llama::GenerateOptions greedy;
  greedy.max_new_tokens = 20;
  CHECK(model->generate(prompt, options).to_vector<int64_t>() == model->generate(prompt, greedy).to_vector<int64_t>());

  // One token from the two most likely, over 400 seeds: P(best) = sigmoid((l1 - l2) / temperature). The
  // temperature is chosen to make that 0.8, far from the 0.5 an ignored or inverted temperature gives.
  std::vector<float> last;
  {
    NoGradGuard no_grad;
    last = narrow(model->forward(reshape(prompt, {1, 8})), 1, 7, 1).to_vector<float>();
  }
  std::vector<int64_t> order(last.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return last[size_t(a)] > last[size_t(b)]; });
  const double gap = double(last[size_t(order[0])]) - double(last[size_t(order[1])]);
  REQUIRE(gap > 1e-3);
  options.max_new_tokens = 1, options.temperature = gap / std::log(4.0), options.top_k = 2;
  const double p_best = 0.8;
  const int runs = 400;
  int best = 0;
  for (int seed = 0; seed < runs; ++seed) {
    options.seed = uint64_t(seed);
    const int64_t token = model->generate(prompt, options).to_vector<int64_t>().back();
    REQUIRE((token == order[0] || token == order[1]));
    best += token == order[0];
  }
  INFO("P(best) " << p_best << ", observed " << best << " / " << runs);
  CHECK(std::abs(best / double(runs) - p_best) < 4 * std::sqrt(p_best * (1 - p_best) / runs));

  // Streaming: the callback sees each token and may stop early.
  std::vector<int64_t> streamed;
  greedy.max_new_tokens = 10;
  const Tensor stopped = model->generate(prompt, greedy, [&](int64_t token) {
    streamed.push_back(token);
    return streamed.size() < 3;
  });
  const std::vector<int64_t> full = model->generate(prompt, greedy).to_vector<int64_t>();
  CHECK(stopped.to_vector<int64_t>() == std::vector<int64_t>(full.begin(), full.begin() + 11));
  CHECK(streamed == std::vector<int64_t>(full.begin() + 8, full.begin() + 11));
}

TEST_CASE("Llama gradients agree with finite differences in f64 (GQA, tied head, attention biases)", "[llama][gradcheck]") {
  for (bool tied : {false, true}) {
    LlamaConfig c = small_config();
    c.tie_word_embeddings = tied, c.attention_bias = tied;
    manual_seed(31);
    Llama model(c);
    randomize(model, 32);
    model.to(kFloat64);
    const Tensor ids = from_vector<int64_t>({3, 17, 5, 9, 0, 12, 7, 7, 2, 18, 4, 11}, {2, 6});
    INFO("tied " << tied);
    CHECK(autograd::gradcheck_module(model, [&](const std::vector<Tensor>& in) { return model.forward(in[0]); }, {ids},
                                     {.atol = 1e-6, .rtol = 1e-6, .max_per_input = 5}));
  }
}

TEST_CASE("loss: next-token cross-entropy, -100 labels ignored", "[llama][loss]") {
  manual_seed(41);
  Llama model(small_config());
  const Tensor ids = from_vector<int64_t>({3, 17, 5, 9, 0, 12, 7, 1, 2, 18, 4, 11}, {2, 6});
  std::vector<int64_t> labels = ids.to_vector<int64_t>();
  labels[1] = labels[2] = labels[9] = -100;  // targets at positions (0, 0), (0, 1) and (1, 2) do not count
  double loss = 0;
  {
    NoGradGuard no_grad;
    const Tensor log_probs = log_softmax(model.forward(narrow(ids, 1, 0, 5)), -1).to(kFloat64);
    const std::vector<double> lp = log_probs.to_vector<double>();
    int counted = 0;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t t = 0; t < 5; ++t) {
        const int64_t target = labels[size_t(b * 6 + t + 1)];
        if (target == -100) continue;
        loss -= lp[size_t((b * 5 + t) * 19 + target)];
        ++counted;
      }
    CHECK(counted == 7);
    loss /= counted;
  }
  CHECK(model.loss(ids, from_vector(labels, {2, 6})).item() == Approx(loss).epsilon(1e-6));
  CHECK(model.loss(ids).item() == model.loss(ids, ids).item());

  CHECK_THROWS_WITH(model.loss(narrow(ids, 1, 0, 1)), Catch::Contains("no (input, target) pair"));
  CHECK_THROWS_WITH(model.loss(ids, from_vector<int64_t>({1, 2}, {1, 2})),
                    Catch::Contains("labels must be int64 of the ids' shape [2, 6]"));
  labels[4] = 19;
  CHECK_THROWS_WITH(model.loss(ids, from_vector(labels, {2, 6})), Catch::Contains("label 19 out of range [0, 19)"));
  CHECK_THROWS_WITH(model.forward(from_vector<int64_t>({1, 19}, {1, 2})),
                    Catch::Contains("token id 19 out of range [0, 19)"));
  CHECK_THROWS_WITH(model.forward(zeros({1, 33}, kInt64)), Catch::Contains("33 positions exceed the 32 available"));
  CHECK_THROWS_WITH(model.forward(zeros({1, 3})), Catch::Contains("must be int64"));
  CHECK_THROWS_WITH(model.forward(zeros({3}, kInt64)), Catch::Contains("[batch, length]"));
  Llama::GenerateOptions options;
  options.max_new_tokens = 30;
  CHECK_THROWS_WITH(model.generate(zeros({3}, kInt64), options), Catch::Contains("exceeds max_position_embeddings 32"));
  options.max_new_tokens = 2, options.temperature = -1;
  CHECK_THROWS_WITH(model.generate(zeros({3}, kInt64), options), Catch::Contains("temperature must be >= 0"));
}

TEST_CASE("save_pretrained / from_pretrained round trip bitwise, files in HF layout", "[llama][checkpoint]") {
  SECTION("the fixture is written back byte for byte in its tensors") {
    auto model = Llama::from_pretrained(test_data("llama-tiny"));
    const std::string dir = temp_dir("fixture");
    model->save_pretrained(dir);
    const io::SafetensorsFile written = io::read_safetensors(dir + "/model.safetensors");
    require_same_state(written.tensors, io::load_safetensors(test_data("llama-tiny/model.safetensors")));
    CHECK(written.metadata.at("format") == "pt");
    auto reloaded = Llama::from_pretrained(dir);
    require_same_state(reloaded->state_dict(), model->state_dict());
    CHECK(reloaded->config().to_json_string() == model->config().to_json_string());
    fs::remove_all(dir);
  }

  SECTION("tied head and attention biases") {
    LlamaConfig c = small_config();
    c.tie_word_embeddings = true, c.attention_bias = true;
    manual_seed(51);
    Llama model(c);
    randomize(model, 52);
    const std::string dir = temp_dir("tied");
    model.save_pretrained(dir);
    const auto written = io::load_safetensors(dir + "/model.safetensors");
    CHECK(written.count("lm_head.weight") == 0);
    // Biases of q/k are reordered like their rows.
    const std::string bias = "model.layers.1.self_attn.k_proj.bias";
    require_close(model.state_dict().at(bias), hf_rows_to_adjacent(written.at(bias), c.num_key_value_heads, c.head_dim), 0);
    auto reloaded = Llama::from_pretrained(dir);
    require_same_state(reloaded->state_dict(), model.state_dict());
    const Tensor ids = from_vector<int64_t>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
    NoGradGuard no_grad;
    CHECK(same_bits(reloaded->forward(ids), model.forward(ids)));

    // A file that also stores the tied head is accepted when it equals the embedding, refused otherwise.
    auto with_head = written;
    with_head["lm_head.weight"] = written.at("model.embed_tokens.weight");
    reloaded->load_hf_state_dict(with_head);
    with_head["lm_head.weight"] = written.at("model.embed_tokens.weight") * 2.0;
    CHECK_THROWS_WITH(reloaded->load_hf_state_dict(with_head), Catch::Contains("differs from 'model.embed_tokens.weight'"));
    fs::remove_all(dir);
  }

  SECTION("incomplete or mismatched checkpoints are refused, naming the tensor") {
    auto model = Llama::from_pretrained(test_data("llama-tiny"));
    auto state = model->hf_state_dict();
    state.erase("model.layers.1.mlp.up_proj.weight");
    CHECK_THROWS_WITH(model->load_hf_state_dict(state), Catch::Contains("missing keys: model.layers.1.mlp.up_proj.weight"));
    state = model->hf_state_dict();
    state["model.layers.0.self_attn.k_proj.weight"] = zeros({8, 32});
    CHECK_THROWS_WITH(model->load_hf_state_dict(state),
                      Catch::Contains("model.layers.0.self_attn.k_proj.weight (checkpoint [8, 32], model [16, 32])"));
    CHECK_THROWS_WITH(Llama::from_pretrained("/nonexistent/llama"), Catch::Contains("is not a directory"));
    const std::string dir = temp_dir("empty");
    fs::create_directories(dir);
    model->config().to_json_file(dir + "/config.json");
    CHECK_THROWS_WITH(Llama::from_pretrained(dir), Catch::Contains("no model.safetensors or model.safetensors.index.json"));
    fs::remove_all(dir);
  }
}

TEST_CASE("Llama::from_pretrained reads F8_E4M3 weights with block scales as its quantization_config says",
          "[llama][checkpoint][fp8]") {
  const LlamaConfig c = small_config();
  manual_seed(61);
  Llama model(c);
  const std::string dir = temp_dir("fp8");
  model.save_pretrained(dir);
  const auto stored = io::load_safetensors(dir + "/model.safetensors");  // HF layout, float32

  // An MLP matrix and q_proj (whose rows the loader also reorders) become E4M3 codes with [4, 5]
  // blocks: [24, 16] and [16, 24] in partial edge blocks either way.
  const io::Fp8BlockSize block{4, 5};
  const std::set<std::string> quantized{"model.layers.1.mlp.down_proj.weight", "model.layers.0.self_attn.q_proj.weight"};
  std::vector<testing::RawTensor> raw;
  std::map<std::string, Tensor> expected;  // HF layout, dequantised
  for (const auto& [name, t] : stored) {
    if (!quantized.count(name)) {
      raw.push_back({name, "F32", t.shape(), testing::f32_bytes(t.to_vector<float>())});
      expected[name] = t;
      continue;
    }
    const int64_t rows = t.size(0), cols = t.size(1);
    const int64_t block_rows = (rows + block.rows - 1) / block.rows, block_cols = (cols + block.cols - 1) / block.cols;
    std::string codes;
    for (int64_t i = 0; i < rows * cols; ++i) {
      const int code = static_cast<int>((i * 37 + 11) % 256);
      codes.push_back(static_cast<char>((code & 0x7F) == 0x7F ? 0x38 : code));  // no NaN
    }
    std::vector<float> scales;
    for (int64_t b = 0; b < block_rows * block_cols; ++b) scales.push_back(0.01f * static_cast<float>(b + 1));
    std::vector<float> values;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t col = 0; col < cols; ++col)
        values.push_back(io::float8_e4m3_to_float(static_cast<uint8_t>(codes[static_cast<size_t>(r * cols + col)])) *
                         scales[static_cast<size_t>((r / block.rows) * block_cols + col / block.cols)]);
    raw.push_back({name, "F8_E4M3", t.shape(), codes});
    raw.push_back({io::fp8_scale_name(name), "F32", {block_rows, block_cols}, testing::f32_bytes(scales)});
    expected[name] = from_vector(values, t.shape());
  }
  {
    std::ofstream(dir + "/model.safetensors", std::ios::binary | std::ios::trunc)
        << testing::raw_safetensors(raw, {{"format", "pt"}});
  }
  nlohmann::json config = nlohmann::json::parse(c.to_json_string());
  {
    std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump();
  }
  CHECK_THROWS_WITH(Llama::from_pretrained(dir),
                    Catch::Contains("'model.layers.0.self_attn.q_proj.weight' is F8_E4M3 but config.json has no "
                                    "quantization_config.weight_block_size"));

  config["quantization_config"] = {
      {"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"}, {"weight_block_size", {4, 5}}};
  {
    std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump();
  }
  const auto loaded = Llama::from_pretrained(dir);
  REQUIRE(loaded->config().quantization_config);
  CHECK(loaded->config().quantization_config->weight_block_size.cols == 5);
  require_same_state(loaded->hf_state_dict(), expected);
  // A bfloat16 model loads the same directory through the same layout, each value rounded once.
  Llama half(c);
  half.to(kBFloat16);
  models::load_checkpoint(half, models::ModelDirectoryTensors(dir, "test", &block), half.checkpoint_layout(), "test");
  for (const auto& [name, t] : loaded->state_dict()) {
    INFO(name);
    CHECK(same_bits(half.state_dict().at(name), t.to(kBFloat16)));
  }
  // latent saves what it holds, float32, and no quantization_config.
  loaded->save_pretrained(dir);
  CHECK(io::read_json_file(dir + "/config.json").count("quantization_config") == 0);
  require_same_state(Llama::from_pretrained(dir)->hf_state_dict(), expected);
  fs::remove_all(dir);
}

TEST_CASE("LlamaConfig reads HF config.json, round-trips and counts parameters", "[llama][config]") {
  const LlamaConfig c = LlamaConfig::from_json_file(test_data("llama-tiny/config.json"));
  CHECK(c.vocab_size == 256);
  CHECK(c.hidden_size == 32);
  CHECK(c.intermediate_size == 64);
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.num_attention_heads == 4);
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.head_dim == 8);
  CHECK(c.max_position_embeddings == 64);
  CHECK(c.rms_norm_eps == 1e-5);
  CHECK(c.rope_theta == 10000.0);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK_FALSE(c.attention_bias);

  const std::string path = temp_dir("config.json");
  c.to_json_file(path);
  CHECK(LlamaConfig::from_json_file(path).to_json_string() == c.to_json_string());
  fs::remove(path);

  int64_t stored = 0;
  for (const auto& [name, t] : io::load_safetensors(test_data("llama-tiny/model.safetensors"))) stored += t.numel();
  CHECK(c.num_parameters() == stored);
  for (bool tied : {false, true}) {
    LlamaConfig small = small_config();
    small.tie_word_embeddings = tied, small.attention_bias = tied;
    CHECK(Llama(small).num_parameters() == small.num_parameters());
  }

  // Published sizes: Llama-2-7B (no GQA) and TinyLlama-1.1B (4 key/value heads), counted, not built.
  const LlamaConfig llama2 = LlamaConfig::from_json_string(
      R"({"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
          "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
          "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "tie_word_embeddings": false})");
  CHECK(llama2.num_parameters() == 6738415616LL);
  const LlamaConfig tinyllama = LlamaConfig::from_json_string(
      R"({"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
          "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
          "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0})");
  CHECK(tinyllama.head_dim == 64);
  CHECK(tinyllama.num_parameters() == 1100048384LL);

  // Keys older configs leave out take transformers' defaults.
  const LlamaConfig minimal = LlamaConfig::from_json_string(
      R"({"vocab_size": 10, "hidden_size": 12, "intermediate_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 3, "max_position_embeddings": 16, "rms_norm_eps": 1e-6})");
  CHECK(minimal.num_key_value_heads == 3);
  CHECK(minimal.head_dim == 4);
  CHECK(minimal.rope_theta == 10000.0);
  CHECK_FALSE(minimal.tie_word_embeddings);
}

TEST_CASE("invalid Llama configs are refused naming the key", "[llama][config]") {
  const std::string base = LlamaConfig::from_json_file(test_data("llama-tiny/config.json")).to_json_string();
  auto with = [&](const std::string& key, const std::string& value) {
    auto j = nlohmann::json::parse(base);
    if (value.empty()) j.erase(key);
    else j[key] = nlohmann::json::parse(value);
    return j.dump();
  };
  auto refused = [&](const std::string& text, const std::string& needle) {
    INFO(text);
    CHECK_THROWS_WITH(LlamaConfig::from_json_string(text, "llama/config.json"), Catch::Contains(needle));
  };
  refused(with("hidden_size", "0"), "key 'hidden_size' must be positive, got 0");
  refused(with("num_key_value_heads", "3"), "key 'num_key_value_heads' (3) must divide num_attention_heads (4)");
  refused(with("num_key_value_heads", "0"), "key 'num_key_value_heads' must be positive");
  refused(with("head_dim", "7"), "key 'head_dim' must be even");
  refused(with("rms_norm_eps", "0"), "key 'rms_norm_eps' must be positive");
  refused(with("rope_theta", "-1"), "key 'rope_theta' must be positive");
  refused(with("vocab_size", ""), "vocab_size");                 // missing
  refused(with("vocab_size", "\"256\""), "vocab_size");          // wrong type
  refused(with("intermediate_size", "64.5"), "intermediate_size");  // not an integer
  refused(with("tie_word_embeddings", "1"), "tie_word_embeddings");
  refused(with("hidden_act", "\"gelu\""), "key 'hidden_act' must be 'silu'");
  refused(with("model_type", "\"mistral\""), "key 'model_type' must be 'llama'");
  refused(with("mlp_bias", "true"), "key 'mlp_bias'");
  refused(with("rope_scaling", R"({"rope_type": "llama3", "factor": 8.0})"), "key 'rope_scaling'");
  refused(with("max_position_embeddings", "-4"), "key 'max_position_embeddings'");
  refused("{not json", "llama/config.json");
  auto no_head_dim = nlohmann::json::parse(with("head_dim", ""));
  no_head_dim["hidden_size"] = 30;
  refused(no_head_dim.dump(), "key 'hidden_size' (30) must be divisible by num_attention_heads (4)");
  refused(with("hidden_size", "-1"), "llama/config.json: key 'hidden_size'");  // the file is named
  CHECK_THROWS_WITH(LlamaConfig::from_json_file("/nonexistent/config.json"), Catch::Contains("/nonexistent/config.json"));

  LlamaConfig c = small_config();
  c.num_attention_heads = 5;
  CHECK_THROWS_WITH(c.validate(),
                    Catch::Contains("LlamaConfig: key 'num_key_value_heads' (2) must divide num_attention_heads (5)"));
  CHECK_THROWS_WITH(Llama(c), Catch::Contains("num_key_value_heads"));
}

TEST_CASE("a small Llama learns to reverse sequences of random tokens", "[llama][learning]") {
  // ids: n random tokens from [1, V), the separator 0, then the same tokens reversed. Only the
  // reversed half is predictable, so the labels of the rest are -100.
  constexpr int64_t V = 16, n = 6, T = 2 * n + 1, batch = 32;
  LlamaConfig c;
  c.vocab_size = V, c.hidden_size = 32, c.intermediate_size = 64, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 8, c.max_position_embeddings = T;
  c.rms_norm_eps = 1e-5;
  manual_seed(61);
  Llama model(c);
  Generator data(62);
  auto make_batch = [&](int64_t rows) {
    const std::vector<int64_t> tokens = randint(1, V, {rows, n}, &data).to_vector<int64_t>();
    std::vector<int64_t> ids, labels;
    for (int64_t b = 0; b < rows; ++b) {
      const auto row = tokens.begin() + b * n;
      std::vector<int64_t> sequence(row, row + n);
      sequence.push_back(0);
      sequence.insert(sequence.end(), std::make_reverse_iterator(row + n), std::make_reverse_iterator(row));
      for (int64_t t = 0; t < T; ++t) labels.push_back(t > n ? sequence[size_t(t)] : -100);
      ids.insert(ids.end(), sequence.begin(), sequence.end());
    }
    return std::pair{from_vector(ids, {rows, T}), from_vector(labels, {rows, T})};
  };

  optim::AdamWOptions options;
  options.lr = 1e-2, options.weight_decay = 0.0;
  optim::AdamW adamw(model.parameters(), options);
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    const auto [ids, labels] = make_batch(batch);
    const Tensor loss = model.loss(ids, labels);
    adamw.zero_grad();
    loss.backward();
    adamw.step();
    if (step == 0) first = loss.item();
    last = loss.item();
  }
  INFO("loss " << first << " -> " << last);
  CHECK(first == Approx(std::log(double(V))).margin(0.3));  // an untrained model guesses uniformly
  CHECK(last < 0.2 * first);

  // Unseen sequences, decoded greedily with the KV cache from the prompt "tokens, separator".
  const auto [ids, labels] = make_batch(20);
  const std::vector<int64_t> all = ids.to_vector<int64_t>();
  int correct = 0;
  Llama::GenerateOptions greedy;
  greedy.max_new_tokens = n;
  for (int64_t b = 0; b < 20; ++b) {
    const auto row = all.begin() + b * T;
    const std::vector<int64_t> out =
        model.generate(from_vector(std::vector<int64_t>(row, row + n + 1)), greedy).to_vector<int64_t>();
    for (int64_t t = n + 1; t < T; ++t) correct += out[size_t(t)] == row[t];
  }
  INFO(correct << " of " << 20 * n << " tokens right");
  CHECK(correct >= 0.9 * 20 * n);
}

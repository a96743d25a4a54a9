// nn::CausalSelfAttention: agreement with attention composed from primitive ops (GQA, YaRN, biases),
// f64 gradchecks of input and parameters, KV-cached decoding against the full forward, and errors.
#include <cstring>

#include "../helpers.hpp"
#include "core/gemm.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {


// The layer written out with primitive ops: projections, RoPE, kv heads repeated over their group,
// masked softmax with the YaRN-corrected scale, output projection.
Tensor reference_layer(const nn::CausalSelfAttention& layer, const Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), H = layer.num_heads, Hkv = layer.num_kv_heads, D = layer.head_dim;
  auto heads = [&](const Tensor& t, int64_t n) { return permute(reshape(t, {B, T, n, D}), {0, 2, 1, 3}); };
  auto repeat = [&](const Tensor& t) {
    return reshape(expand(unsqueeze(t, 2), {B, Hkv, H / Hkv, T, D}), {B, H, T, D});
  };
  const Tensor q = permute(layer.rotary->apply(reshape(layer.q_proj->forward(x), {B, T, H, D}), 0), {0, 2, 1, 3});
  const Tensor k = permute(layer.rotary->apply(reshape(layer.k_proj->forward(x), {B, T, Hkv, D}), 0), {0, 2, 1, 3});
  const Tensor v = heads(layer.v_proj->forward(x), Hkv);
  const double scale = layer.rotary->attention_scale() / std::sqrt(static_cast<double>(D));
  std::vector<int64_t> mask;
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) mask.push_back(j > i ? 1 : 0);
  const Tensor scores = masked_fill(matmul(q, transpose(repeat(k), -1, -2)) * scale, from_vector(mask, {T, T}),
                                    -std::numeric_limits<double>::infinity());
  const Tensor out = matmul(softmax(scores, -1), repeat(v));
  return layer.o_proj->forward(reshape(permute(out, {0, 2, 1, 3}), {B, T, H * D}));
}

nn::CausalSelfAttentionOptions yarn_options(bool bias) {
  nn::CausalSelfAttentionOptions o;
  o.max_position_embeddings = 64;
  o.rope_scaling = nn::YarnConfig{4.0, 16, 32.0, 1.0, 1.0, 1.0};
  o.bias = bias;
  return o;
}

}  // namespace

TEST_CASE("attention layer: Hugging Face names and shapes", "[attention_layer]") {
  nn::CausalSelfAttention layer(16, 4, 2);
  std::vector<std::string> names;
  for (const auto& [name, t] : layer.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"});
  CHECK(layer.head_dim == 4);
  CHECK(layer.k_proj->weight.shape() == Shape{8, 16});  // 2 kv heads of 4
  CHECK(layer.o_proj->weight.shape() == Shape{16, 16});
  nn::CausalSelfAttentionOptions options;
  options.bias = true;
  options.head_dim = 6;
  nn::CausalSelfAttention biased(16, 4, 1, options);
  CHECK(biased.named_parameters().size() == 8);
  CHECK(biased.q_proj->weight.shape() == Shape{24, 16});
  CHECK(biased.forward(zeros({1, 3, 16})).shape() == Shape{1, 3, 16});
}

TEST_CASE("attention layer equals the composed version (MHA, GQA, MQA)", "[attention_layer]") {
  for (const auto& [heads, kv_heads] : std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {4, 2}, {4, 1}}) {
    INFO(heads << " heads over " << kv_heads << " kv heads");
    nn::CausalSelfAttention layer(16, heads, kv_heads, yarn_options(true));
    for (DType dt : {kFloat32, kFloat64}) {
      layer.to(dt);
      const Tensor x = randn64({2, 7, 16}, 1).detach().to(dt);
      require_close(layer(x), reference_layer(layer, x), dt == kFloat32 ? 1e-5 : 1e-12);
    }
  }
}

TEST_CASE("attention layer gradcheck in f64: input and every parameter", "[attention_layer]") {
  nn::CausalSelfAttention layer(8, 4, 2, yarn_options(true));
  layer.to(kFloat64);
  const Tensor x = randn64({2, 5, 8}, 2);
  CHECK(autograd::gradcheck_module(layer, [&](const std::vector<Tensor>& in) { return layer(in[0]); }, {x},
                                   {.atol = 1e-6, .rtol = 1e-6}));
}

TEST_CASE("attention layer: cached decoding equals the full forward for every prefix", "[attention_layer]") {
  nn::CausalSelfAttention layer(16, 4, 2, yarn_options(false));
  for (DType dt : {kFloat64, kFloat32}) {
    layer.to(dt);
    const double tol = dt == kFloat32 ? 1e-5 : 1e-12;
    const int64_t B = 2, T = 11;
    const Tensor x = randn64({B, T, 16}, 3).detach().to(dt);
    NoGradGuard no_grad;
    const Tensor full_output = layer(x);
    // Causal: the forward of every prefix is the prefix of the full forward.
    for (int64_t t = 1; t <= T; ++t) require_close(layer(narrow(x, 1, 0, t)), narrow(full_output, 1, 0, t), tol);
    // One token at a time.
    nn::KVCache cache(T);
    for (int64_t t = 0; t < T; ++t) {
      INFO("step " << t);
      require_close(layer(narrow(x, 1, t, 1), &cache), narrow(full_output, 1, t, 1), tol);
      CHECK(cache.length() == t + 1);
    }
    CHECK(cache.keys().shape() == Shape{B, T, 2, 4});
    // A prompt of 4, then chunks of 1, 2 and 4, after a reset that reuses the buffer.
    cache.reset();
    int64_t start = 0;
    for (const int64_t chunk : {4, 1, 2, 4}) {
      INFO("chunk at " << start);
      require_close(layer(narrow(x, 1, start, chunk), &cache), narrow(full_output, 1, start, chunk), tol);
      start += chunk;
    }
    CHECK_THROWS_WITH(layer(narrow(x, 1, 0, 1), &cache),
                      Catch::Contains("cannot append 1 positions after 11") && Catch::Contains("capacity 11"));
  }
}

TEST_CASE("at bf16 the KV cache keeps its keys' and values' rounded copies current, and decoding reads them",
          "[attention_layer][bf16]") {
  if (!latent::testing::bf16_available()) return;
  nn::CausalSelfAttention layer(16, 4, 2, yarn_options(false));
  const Tensor x = randn64({2, 12, 16}, 5).detach().to(kFloat32);
  NoGradGuard no_grad;
  Tensor full;
  {
    MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
    full = layer(x);
  }
  // Both copies equal to the cache rounded, over the positions it holds; attached while current.
  auto check_copies = [](const nn::KVCache& cache) {
    for (const Tensor& t : {cache.keys(), cache.values()}) {
      const Tensor view = rounded_view(t);
      REQUIRE(view.defined());
      const Tensor kept = view.contiguous(), expected = t.to(kBFloat16).contiguous();
      CHECK(std::memcmp(kept.raw_data(), expected.raw_data(), static_cast<size_t>(kept.numel()) * 2) == 0);
    }
  };
  nn::KVCache cache(12);
  int64_t at = 0;
  // A prompt of 4, two tokens at fp32 (the copies then lack them and are not attached), the rest at
  // bf16; then a reset that reuses the buffers for a prompt of 5.
  for (const int64_t chunk : {4, 1, 1, 1, 2, 3}) {
    const bool fp32 = at == 4 || at == 5;
    MatmulPrecisionGuard precision(fp32 ? MatmulPrecision::kHighest : MatmulPrecision::kBFloat16);
    const Tensor y = layer(narrow(x, 1, at, chunk), &cache);
    at += chunk;
    INFO("after position " << at - 1);
    if (fp32) {
      CHECK_FALSE(rounded_view(cache.keys()).defined());
      CHECK_FALSE(rounded_view(cache.values()).defined());
      continue;
    }
    check_copies(cache);
    // The same operands as the full forward's at bf16, summed in another order: bf16-close.
    require_close(y, narrow(full, 1, at - chunk, chunk), 2e-2);
  }
  cache.reset();
  MatmulPrecisionGuard bf16(MatmulPrecision::kBFloat16);
  layer(narrow(x, 1, 0, 5), &cache);
  check_copies(cache);
}

TEST_CASE("attention layer errors", "[attention_layer]") {
  CHECK_THROWS_WITH(nn::CausalSelfAttention(16, 4, 3), Catch::Contains("num_heads 4, num_kv_heads 3"));
  CHECK_THROWS_WITH(nn::CausalSelfAttention(18, 4, 2),
                    Catch::Contains("hidden_size 18 is not divisible by num_heads 4"));
  CHECK_THROWS_WITH(nn::CausalSelfAttention(12, 4, 2), Catch::Contains("even") && Catch::Contains("3"));
  nn::CausalSelfAttentionOptions options;
  options.max_position_embeddings = 8;
  nn::CausalSelfAttention layer(16, 4, 2, options);
  CHECK_THROWS_WITH(layer(zeros({1, 3, 15})), Catch::Contains("expected x [B, T, 16], got [1, 3, 15]"));
  CHECK_THROWS_WITH(layer(zeros({1, 9, 16})), Catch::Contains("max_position_embeddings 8"));
  nn::KVCache cache(16);
  CHECK_THROWS_WITH(layer(zeros({1, 2, 16}), &cache), Catch::Contains("NoGradGuard"));
  NoGradGuard no_grad;
  layer(zeros({1, 2, 16}), &cache);
  CHECK_THROWS_WITH(layer(zeros({2, 1, 16}), &cache), Catch::Contains("KVCache") && Catch::Contains("batch"));
  CHECK_THROWS_WITH(nn::KVCache(0), Catch::Contains("capacity must be positive"));
}

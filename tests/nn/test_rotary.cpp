// RotaryEmbedding: hand-computed rotations, YaRN frequencies against an independent computation,
// the relative-position property, and errors (the op's gradchecks: tests/autograd/test_rotary_op.cpp).
#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

// The fixture's rope_scaling (tests/data/dsv3-tiny/config.json).
const nn::YarnConfig kTinyYarn{4.0, 32, 32.0, 1.0, 1.0, 1.0};

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST_CASE("rotary: adjacent pairs rotate by position * inv_freq (hand values)", "[rotary]") {
  // dim 4, base 10000: inv_freq = {1, 0.01}. Expected values from Python, as the official code's complex
  // view: view_as_real(view_as_complex(x.view(2, 2)) * polar(1, p * inv_freq)) in float64.
  const nn::RotaryEmbedding rope(4, 8, 10000.0);
  require_close(from_vector(rope.inv_freq()), {1.0, 0.01}, 1e-15);
  for (DType dt : {kFloat32, kFloat64}) {
    const double tol = dt == kFloat32 ? 1e-6 : 1e-14;
    const Tensor x = from_vector<double>({1, 2, 3, 4, 1, 2, 3, 4}, {1, 2, 1, 4}).to(dt);  // T = 2, same vector twice
    // Positions 1 and 2 (start 1), then positions 0 and 3 given explicitly.
    const Tensor started = rope.apply(x, 1);
    REQUIRE(started.dtype() == dt);
    require_close(narrow(started, 1, 0, 1),
                  {-1.1426396637476532, 1.922075596544176, 2.959850667913329, 4.029799501669161}, tol);
    const Tensor explicit_positions = rope.apply(x, from_vector<int64_t>({0, 3}));
    require_close(explicit_positions,
                  {1, 2, 3, 4, -1.27223251272018, -1.8388649851410237, 2.87866810043698, 4.088186635603437}, tol);
  }
}

TEST_CASE("rotary: plain inverse frequencies are base^(-2i/dim)", "[rotary]") {
  const std::vector<double> f = nn::rope_inv_freq(8, 10000.0);
  require_close(from_vector(f), {1.0, 0.1, 0.01, 0.001}, 1e-15);
  CHECK(nn::rope_attention_scale(std::nullopt) == 1.0);
  CHECK(nn::yarn_mscale(1.0, 1.0) == 1.0);  // no interpolation, no correction
  CHECK(nn::yarn_mscale(0.5, 1.0) == 1.0);
}

TEST_CASE("rotary: YaRN frequencies and softmax scale of the tiny fixture config", "[rotary]") {
  // Computed independently with /usr/bin/python3 from the formulas of docs/deepseek_v3.md, "YaRN" (plain math module):
  //   corr(n) = dim*ln(orig/(n*2*pi))/(2*ln(base)); low = max(floor(corr(32)), 0) = 0, high = min(ceil(corr(1)), 7) = 1
  //   inv_freq_i = base^(-2i/dim) * (ramp_i/factor + 1 - ramp_i), ramp = clamp((i-low)/(high-low), 0, 1)
  //   -> [1.0, 0.025, 0.0025, 0.00025];  m = 0.1*ln(4) + 1 = 1.138629436111989,  m^2 = 1.2964769927807063
  const std::vector<double> f = nn::rope_inv_freq(8, 10000.0, kTinyYarn);
  require_close(from_vector(f), {1.0, 0.025, 0.0025, 0.00025}, 1e-15);
  CHECK(nn::yarn_mscale(4.0, 1.0) == Approx(1.138629436111989).epsilon(1e-14));
  CHECK(nn::rope_attention_scale(kTinyYarn) == Approx(1.2964769927807063).epsilon(1e-14));
  const nn::RotaryEmbedding rope(8, 128, 10000.0, kTinyYarn);
  CHECK(rope.attention_scale() == Approx(1.2964769927807063).epsilon(1e-14));
  // Tables hold cos/sin(p * inv_freq) (magnitude 1, as mscale == mscale_all_dim).
  require_close(narrow(rope.cos(kFloat64), 0, 100, 1),
                {std::cos(100.0), std::cos(2.5), std::cos(0.25), std::cos(0.025)}, 1e-14);
  require_close(narrow(rope.sin(kFloat32), 0, 100, 1),
                {std::sin(100.0), std::sin(2.5), std::sin(0.25), std::sin(0.025)}, 1e-6);
  // With mscale 2 and mscale_all_dim 1, cos and sin carry Hugging Face's magnitude
  // (0.2 ln 4 + 1) / (0.1 ln 4 + 1) = 1.121751143713058 (Python), while the softmax factor still uses
  // mscale_all_dim only.
  const nn::YarnConfig magnified{4.0, 32, 32.0, 1.0, 2.0, 1.0};
  const nn::RotaryEmbedding scaled(8, 128, 10000.0, magnified);
  require_close(narrow(scaled.cos(kFloat64), 0, 0, 1), std::vector<double>(4, 1.121751143713058), 1e-14);
  CHECK(nn::rope_attention_scale(magnified) == Approx(1.2964769927807063).epsilon(1e-14));
}

TEST_CASE("rotary: YaRN frequencies of the released DeepSeek-V3 config", "[rotary]") {
  // dim 64, factor 40, original 4096: low 10, high 23. Expected values from the same Python computation
  // (they match the spec's table: j=0: 1, j=10: 0.0562341, j=16: 0.0055, j=23: 3.3338e-5, j=31: 3.3338e-6).
  const std::vector<double> f = nn::rope_inv_freq(64, 10000.0, nn::YarnConfig{40.0, 4096, 32.0, 1.0, 1.0, 1.0});
  REQUIRE(f.size() == 32);
  const std::vector<std::pair<size_t, double>> expected = {{0, 1.0},
                                                           {10, 0.05623413251903491},
                                                           {11, 0.03900692656714386},
                                                           {16, 0.0055},
                                                           {22, 0.0001778279410038922},
                                                           {23, 3.33380358040831e-05},
                                                           {31, 3.3338035804083097e-06}};
  for (const auto& [i, value] : expected) {
    INFO("pair " << i);
    CHECK(f[i] == Approx(value).epsilon(1e-13));
  }
  CHECK(nn::rope_attention_scale(nn::YarnConfig{40.0, 4096, 32.0, 1.0, 1.0, 1.0}) ==
        Approx(1.3688879 * 1.3688879).epsilon(1e-7));
}

TEST_CASE("rotary: <rope(q, m), rope(k, n)> depends only on m - n", "[rotary]") {
  const nn::RotaryEmbedding rope(8, 128, 10000.0, kTinyYarn);
  const Tensor q = randn64({1, 1, 1, 8}, 5).detach(), k = randn64({1, 1, 1, 8}, 6).detach();
  auto score = [&](int64_t m, int64_t n) {
    return dot(rope.apply(q, m).to_vector<double>(), rope.apply(k, n).to_vector<double>());
  };
  for (const int64_t offset : {0, 3, 17}) {
    const double reference = score(offset, 0);
    for (const int64_t n : {1, 9, 60, 100}) {
      INFO("m - n = " << offset << ", n = " << n);
      CHECK(score(n + offset, n) == Approx(reference).epsilon(1e-12));
    }
  }
  // Not a constant: different distances give different scores.
  CHECK(score(3, 0) != Approx(score(17, 0)).epsilon(1e-6));
}

TEST_CASE("rotary: errors name the problem", "[rotary]") {
  const nn::RotaryEmbedding rope(4, 8);
  const Tensor x = zeros({1, 3, 2, 4});
  CHECK_THROWS_WITH(rope.apply(x, 6),
                    Catch::Contains("position 8 out of range [0, 8)") && Catch::Contains("max_position_embeddings 8"));
  CHECK_THROWS_WITH(rope.apply(x, -1), Catch::Contains("position -1"));
  CHECK_THROWS_WITH(rope.apply(zeros({1, 3, 2, 6}), 0),
                    Catch::Contains("[B, T, H, 4]") && Catch::Contains("[1, 3, 2, 6]"));
  CHECK_THROWS_WITH(rope.apply(zeros({3, 4}), 0), Catch::Contains("[3, 4]"));
  CHECK_THROWS_WITH(rope.apply(x, from_vector<int64_t>({0, 1})), Catch::Contains("2 positions"));
  CHECK_THROWS_WITH(rope.apply(x, zeros({3})), Catch::Contains("Int64"));
  CHECK_THROWS_WITH(rope.apply(zeros({1, 3, 2, 4}, kInt64), 0), Catch::Contains("floating-point"));
  CHECK_THROWS_WITH(nn::RotaryEmbedding(5, 8), Catch::Contains("even") && Catch::Contains("5"));
  CHECK_THROWS_WITH(nn::RotaryEmbedding(4, 0), Catch::Contains("max_position_embeddings"));
}

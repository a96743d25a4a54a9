// scaled_dot_product_attention: values and gradients against attention composed from primitive ops
// (MHA, GQA, MQA, Dv != Dqk, KV-cache offsets, non-causal, several tiles and spans), gradchecks,
// strided inputs, thread-count determinism and errors.
#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// The composed definition: repeat kv heads over their group, softmax(q k^T * scale + causal mask) v.
Tensor reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), Hkv = k.size(1), S = k.size(2), group = H / Hkv;
  auto repeat = [&](const Tensor& x) {
    return reshape(expand(unsqueeze(x, 2), {B, Hkv, group, S, x.size(3)}), {B, H, S, x.size(3)});
  };
  if (scale == 0) scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  Tensor scores = matmul(q, transpose(repeat(k), -1, -2)) * scale;
  if (causal) {
    std::vector<int64_t> mask;
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < S; ++j) mask.push_back(j > i + S - T ? 1 : 0);
    scores = masked_fill(scores, from_vector(mask, {T, S}), -std::numeric_limits<double>::infinity());
  }
  return matmul(softmax(scores, -1), repeat(v));
}

struct Evaluated {
  Tensor value;
  std::vector<Tensor> grads;
};

// fn's value and the gradients of sum(fn * fixed random weights) with respect to fresh copies of inputs.
Evaluated evaluate(const Fn& fn, const std::vector<Tensor>& inputs) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : inputs) leaves.push_back(t.detach().clone().requires_grad_());
  Evaluated result{fn(leaves), {}};
  Generator gen(7);
  sum(result.value * randn(result.value.shape(), result.value.dtype(), &gen)).backward();
  for (const Tensor& leaf : leaves) result.grads.push_back(leaf.grad());
  return result;
}

void require_same(const Evaluated& a, const Evaluated& b, double tol) {
  require_close(a.value, b.value, tol);
  for (size_t i = 0; i < a.grads.size(); ++i) {
    INFO("gradient of input " << i);
    REQUIRE(a.grads[i].defined());
    require_close(a.grads[i], b.grads[i], tol);
  }
}

struct Case {
  const char* name;
  int64_t B, H, Hkv, T, S, Dqk, Dv;
  bool causal;
  double scale;
};

void check_against_reference(const Case& c, DType dtype, double tol) {
  INFO(c.name << " in " << dtype_name(dtype));
  const std::vector<Tensor> inputs = {randn64({c.B, c.H, c.T, c.Dqk}, 1).to(dtype),
                                      randn64({c.B, c.Hkv, c.S, c.Dqk}, 2).to(dtype),
                                      randn64({c.B, c.Hkv, c.S, c.Dv}, 3).to(dtype)};
  const Evaluated fused = evaluate(
      [&](const std::vector<Tensor>& in) {
        return scaled_dot_product_attention(in[0], in[1], in[2], c.causal, c.scale);
      },
      inputs);
  const Evaluated reference = evaluate(
      [&](const std::vector<Tensor>& in) { return reference_attention(in[0], in[1], in[2], c.causal, c.scale); },
      inputs);
  REQUIRE(fused.value.shape() == Shape{c.B, c.H, c.T, c.Dv});
  REQUIRE(fused.value.dtype() == dtype);
  require_same(fused, reference, tol);
}

// Tiles are 64 x 64: lengths 70 and 130 leave partial tiles, 128 exactly fills them.
const std::vector<Case> kCases = {
    {"MHA, causal, partial tiles", 2, 2, 2, 70, 70, 8, 8, true, 0.0},
    {"GQA 4 heads over 2", 1, 4, 2, 67, 67, 6, 6, true, 0.0},
    {"MQA 3 heads over 1", 2, 3, 1, 20, 20, 5, 5, true, 0.0},
    {"Dv != Dqk (MLA-like 12 vs 7), custom scale", 1, 2, 2, 65, 65, 12, 7, true, 0.3},
    {"KV cache: 5 new queries after 125 cached keys", 1, 2, 1, 5, 130, 4, 6, true, 0.0},
    {"KV cache: one decode step", 2, 2, 2, 1, 66, 4, 4, true, 0.0},
    {"GQA decode step: a group's heads as rows", 2, 4, 2, 1, 70, 6, 5, true, 0.0},
    {"MQA decode step, non-causal, 3 heads over 1", 1, 3, 1, 1, 130, 5, 7, false, 0.4},
    {"KV cache across a tile edge", 1, 1, 1, 70, 100, 4, 4, true, 0.0},
    {"non-causal, S != T", 1, 2, 1, 9, 130, 4, 3, false, 0.0},
    {"full tiles", 1, 1, 1, 128, 128, 4, 4, true, 0.0},
    // The forward holds 65,536 scores per task: 300 rows take keys in spans of three tiles (the last
    // span partial), 600 rows one tile per span; softmax state carries from span to span.
    {"spans of three tiles after a cache", 1, 2, 1, 300, 400, 4, 3, true, 0.0},
    {"a span per tile", 1, 1, 1, 600, 600, 3, 3, true, 0.0},
};

}  // namespace

TEST_CASE("attention equals the composed version in f64, values and gradients", "[attention]") {
  for (const Case& c : kCases) check_against_reference(c, kFloat64, 1e-11);
}

TEST_CASE("attention equals the composed version in f32", "[attention]") {
  for (const Case& c : kCases) check_against_reference(c, kFloat32, 2e-5);
}

TEST_CASE("attention gradcheck in f64", "[attention]") {
  const Tensor q = randn64({1, 2, 5, 3}, 11), k = randn64({1, 1, 7, 3}, 12), v = randn64({1, 1, 7, 2}, 13);
  for (const bool causal : {true, false}) {
    INFO("causal " << causal);
    CHECK(autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return scaled_dot_product_attention(in[0], in[1], in[2], causal); },
        {q, k, v}));
  }
  // MHA with T = S, and only some inputs requiring grad.
  const Tensor q2 = randn64({2, 2, 4, 3}, 14), k2 = randn64({2, 2, 4, 3}, 15), v2 = randn64({2, 2, 4, 3}, 16).detach();
  CHECK(autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return scaled_dot_product_attention(in[0], in[1], in[2], true, 0.7); },
      {q2, k2, v2}));
}

TEST_CASE("attention hand values: one query over two keys", "[attention]") {
  // scores = (q.k) / sqrt(2) = {0, 2/sqrt(2)}; weights = softmax; out = weights . v.
  const Tensor q = from_vector<double>({1, 1}, {1, 1, 1, 2});
  const Tensor k = from_vector<double>({1, -1, 1, 1}, {1, 1, 2, 2});
  const Tensor v = from_vector<double>({10, 0, 0, 10}, {1, 1, 2, 2});
  const double w1 = 1 / (1 + std::exp(-std::sqrt(2.0)));
  require_close(scaled_dot_product_attention(q, k, v, true), {10 * (1 - w1), 10 * w1}, 1e-14);
  // Causal with T = S = 2: the first query only sees the first key.
  const Tensor q2 = from_vector<double>({5, -3, 1, 1}, {1, 1, 2, 2});
  require_close(scaled_dot_product_attention(q2, k, v, true), {10, 0, 10 * (1 - w1), 10 * w1}, 1e-14);
}

TEST_CASE("attention reads strided views in place and lays out outputs like q", "[attention]") {
  // [B, T, H, D] tensors permuted to [B, H, T, D], as a model produces them; k's heads broadcast (MQA by
  // expand). T = 1 is a decoding step, whose query heads run as the rows of one panel.
  for (const int64_t T : {9, 1}) {
    INFO("T = " << T);
    const int64_t B = 2, H = 3, D = 4;
    const Tensor x = randn64({B, T, H, 2 * D}, 21), kv = randn64({B, T, 1, 2 * D}, 22);
    const Fn strided = [&](const std::vector<Tensor>& in) {
      const Tensor q = permute(narrow(in[0], 3, 0, D), {0, 2, 1, 3});
      const Tensor k = permute(expand(narrow(in[1], 3, 0, D), {B, T, H, D}), {0, 2, 1, 3});
      const Tensor v = permute(expand(narrow(in[1], 3, D, D), {B, T, H, D}), {0, 2, 1, 3});
      return scaled_dot_product_attention(q, k, v);
    };
    const Fn reference = [&](const std::vector<Tensor>& in) {
      const Tensor q = contiguous(permute(narrow(in[0], 3, 0, D), {0, 2, 1, 3}));
      const Tensor k = contiguous(permute(narrow(in[1], 3, 0, D), {0, 2, 1, 3}));
      const Tensor v = contiguous(permute(narrow(in[1], 3, D, D), {0, 2, 1, 3}));
      return reference_attention(q, k, v, true, 0.0);
    };
    require_same(evaluate(strided, {x, kv}), evaluate(reference, {x, kv}), 1e-12);
    CHECK(permute(strided({x, kv}), {0, 2, 1, 3}).is_contiguous());  // [B, T, H, Dv] in memory
  }
  // One query broadcast over the heads (head stride 0) cannot be read as rows; it still attends per head.
  const Tensor q1 = randn64({2, 1, 1, 4}, 26), k1 = randn64({2, 1, 7, 4}, 27), v1 = randn64({2, 1, 7, 3}, 28);
  const Fn broadcast = [](const std::vector<Tensor>& in) {
    return scaled_dot_product_attention(expand(in[0], {2, 3, 1, 4}), in[1], in[2]);
  };
  const Fn broadcast_reference = [](const std::vector<Tensor>& in) {
    return reference_attention(contiguous(expand(in[0], {2, 3, 1, 4})), in[1], in[2], true, 0.0);
  };
  require_same(evaluate(broadcast, {q1, k1, v1}), evaluate(broadcast_reference, {q1, k1, v1}), 1e-12);
  // A view whose last dim is not contiguous is copied first.
  const Tensor qt = randn64({1, 2, 4, 6}, 23), kt = randn64({1, 2, 4, 6}, 24), vt = randn64({1, 2, 6, 5}, 25);
  const Fn transposed = [](const std::vector<Tensor>& in) {
    return scaled_dot_product_attention(transpose(in[0], 2, 3), transpose(in[1], 2, 3), in[2], false);
  };
  const Fn transposed_reference = [](const std::vector<Tensor>& in) {
    return reference_attention(transpose(in[0], 2, 3), transpose(in[1], 2, 3), in[2], false, 0.0);
  };
  require_same(evaluate(transposed, {qt, kt, vt}), evaluate(transposed_reference, {qt, kt, vt}), 1e-12);
}

TEST_CASE("attention gives bitwise the same results for 1 and 2 threads", "[attention]") {
  const int threads = get_num_threads();
  const std::vector<Tensor> inputs = {randn64({2, 4, 100, 8}, 31).to(kFloat32),
                                      randn64({2, 2, 100, 8}, 32).to(kFloat32),
                                      randn64({2, 2, 100, 8}, 33).to(kFloat32)};
  const Fn fn = [](const std::vector<Tensor>& in) { return scaled_dot_product_attention(in[0], in[1], in[2]); };
  set_num_threads(1);
  const Evaluated one = evaluate(fn, inputs);
  set_num_threads(2);
  const Evaluated two = evaluate(fn, inputs);
  set_num_threads(threads);
  CHECK(one.value.to_vector<float>() == two.value.to_vector<float>());
  for (size_t i = 0; i < inputs.size(); ++i) CHECK(one.grads[i].to_vector<float>() == two.grads[i].to_vector<float>());
}

TEST_CASE("attention errors name the op and the shapes", "[attention]") {
  const Tensor q = zeros({1, 4, 3, 8}), k = zeros({1, 2, 5, 8}), v = zeros({1, 2, 5, 6});
  CHECK_NOTHROW(scaled_dot_product_attention(q, k, v));
  CHECK_THROWS_WITH(scaled_dot_product_attention(zeros({4, 3, 8}), k, v),
                    Catch::Contains("scaled_dot_product_attention") && Catch::Contains("q [4, 3, 8]"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, zeros({2, 2, 5, 8}), zeros({2, 2, 5, 6})),
                    Catch::Contains("batch"));
  CHECK_THROWS_WITH(
      scaled_dot_product_attention(q, zeros({1, 3, 5, 8}), zeros({1, 3, 5, 6})),
      Catch::Contains("4 query heads are not a multiple of 3 kv heads") && Catch::Contains("k [1, 3, 5, 8]"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, zeros({1, 2, 5, 7}), v), Catch::Contains("head dims differ"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, k, zeros({1, 2, 4, 6})), Catch::Contains("k and v differ"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(zeros({1, 4, 6, 8}), k, v),
                    Catch::Contains("S = 5 < T = 6") && Catch::Contains("q [1, 4, 6, 8]"));
  CHECK_NOTHROW(scaled_dot_product_attention(zeros({1, 4, 6, 8}), k, v, false));  // fine without the mask
  CHECK_THROWS_WITH(scaled_dot_product_attention(q.to(kFloat64), k, v), Catch::Contains("dtypes differ"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(zeros({1, 4, 3, 8}, kInt64), zeros({1, 2, 5, 8}, kInt64),
                                                 zeros({1, 2, 5, 6}, kInt64)),
                    Catch::Contains("int64"));
  CHECK_THROWS_WITH(scaled_dot_product_attention(q, zeros({1, 2, 0, 8}), zeros({1, 2, 0, 6}), false),
                    Catch::Contains("no keys"));
}

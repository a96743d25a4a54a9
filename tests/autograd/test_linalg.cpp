// matmul and linear: torch.matmul shape rules, strided operands handed to BLAS without copies,
// f32/f64 agreement, gradients, errors, and bitwise determinism across thread counts.
#include <array>

#include "../helpers.hpp"

using namespace latent;
using latent::testing::randn64;
using latent::testing::require_close;

namespace {

// Plain triple loop in double over the last two dims of contiguous [batch..., M, K] and [batch..., K, N].
std::vector<double> reference_matmul(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to(kFloat64).to_vector<double>(), y = b.to(kFloat64).to_vector<double>();
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1), batch = a.numel() / (M * K);
  std::vector<double> out(static_cast<size_t>(batch * M * N), 0.0);
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += x[size_t(n * M * K + i * K + k)] * y[size_t(n * K * N + k * N + j)];
        out[size_t(n * M * N + i * N + j)] = acc;
      }
  return out;
}

Tensor random(const Shape& shape, uint64_t seed, DType dtype = kFloat64) {
  Generator gen(seed);
  return randn(shape, dtype, &gen);
}

// Bytes the op allocated beyond what was in use before it (its peak), so a hidden copy shows up.
template <class F>
int64_t peak_extra_bytes(F&& f) {
  allocator::reset_peak();
  const int64_t before = allocator::stats().bytes_in_use;
  const Tensor out = f();
  return allocator::stats().peak_bytes_in_use - before;
}

int64_t bytes_of(const Shape& shape, DType dtype) {
  return static_cast<int64_t>(allocator::size_class(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype)));
}

}  // namespace

TEST_CASE("matmul follows torch.matmul for 1-D, 2-D and batched operands", "[linalg]") {
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor a = from_vector<double>({1, 2, 3, 4}, {2, 2}).to(dt),
                 b = from_vector<double>({5, 6, 7, 8}, {2, 2}).to(dt);
    require_close(matmul(a, b), {19, 22, 43, 50});
    const Tensor v = from_vector<double>({1, -1}).to(dt);
    const Tensor dot = matmul(v, v);
    CHECK(dot.shape() == Shape{});
    CHECK(dot.item() == 2);
    const Tensor vm = matmul(v, b);  // [2] @ [2, 2] -> [2]
    CHECK(vm.shape() == Shape{2});
    require_close(vm, {-2, -2});
    const Tensor mv = matmul(a, v);  // [2, 2] @ [2] -> [2]
    CHECK(mv.shape() == Shape{2});
    require_close(mv, {-1, -1});
    CHECK(matmul(v, zeros({3, 2, 5}, dt)).shape() == Shape{3, 5});
    CHECK(matmul(zeros({3, 4, 2}, dt), v).shape() == Shape{3, 4});
    // An empty inner dimension gives zeros; empty outer dimensions give empty results.
    require_close(matmul(zeros({2, 0}, dt), zeros({0, 3}, dt)), {0, 0, 0, 0, 0, 0});
    CHECK(matmul(zeros({0, 4}, dt), zeros({4, 3}, dt)).shape() == Shape{0, 3});
  }
}

TEST_CASE("batched matmul broadcasts batch dims and matches a reference", "[linalg]") {
  const Tensor a = random({3, 4, 5}, 1), b = random({3, 5, 6}, 2);
  const Tensor c = matmul(a, b);
  CHECK(c.shape() == Shape{3, 4, 6});
  require_close(c, reference_matmul(a, b), 1e-12);
  // [2, 1, 4, 5] @ [3, 5, 6] -> [2, 3, 4, 6]: a's batch entry i pairs with every b.
  const Tensor a2 = random({2, 1, 4, 5}, 3);
  const Tensor c2 = matmul(a2, b);
  CHECK(c2.shape() == Shape{2, 3, 4, 6});
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j) {
      INFO("batch " << i << ", " << j);
      const Tensor got = c2.narrow(0, i, 1).narrow(1, j, 1).reshape({4, 6});
      require_close(got, reference_matmul(a2.narrow(0, i, 1).reshape({4, 5}), b.narrow(0, j, 1).reshape({5, 6})),
                    1e-12);
    }
  // A batched left operand with a plain matrix: folded into one GEMM, same values.
  const Tensor w = random({5, 6}, 4);
  const Tensor folded = matmul(a, w);
  CHECK(folded.shape() == Shape{3, 4, 6});
  require_close(folded, reference_matmul(a.reshape({12, 5}), w), 1e-12);
  // A plain matrix on the left of a batch.
  const Tensor left = matmul(random({4, 5}, 5), b);
  CHECK(left.shape() == Shape{3, 4, 6});
  require_close(left.narrow(0, 1, 1).reshape({4, 6}),
                reference_matmul(random({4, 5}, 5), b.narrow(0, 1, 1).reshape({5, 6})), 1e-12);
}

TEST_CASE("transposed and broadcast operands reach BLAS without a copy", "[linalg]") {
  for (DType dt : {kFloat32, kFloat64}) {
    const Tensor a = random({64, 48}, 6, dt), b = random({64, 32}, 7, dt), c = random({48, 32}, 8, dt);
    const Shape out{48, 32};
    // a^T @ b: a transposed view is a column-major matrix BLAS reads as it is.
    const int64_t extra = peak_extra_bytes([&] { return matmul(a.t(), b); });
    CHECK(extra == bytes_of(out, dt));
    require_close(matmul(a.t(), b), reference_matmul(a.t().contiguous(), b), 1e-4);
    // Both transposed: (b^T @ a)^T... here b^T [32, 64] @ a [64, 48] with b^T strided.
    CHECK(peak_extra_bytes([&] { return matmul(b.t(), a); }) == bytes_of({32, 48}, dt));
    // A row slice of a larger matrix (leading dimension > number of columns).
    const Tensor slice = c.narrow(1, 8, 16);  // [48, 16], row stride 32
    CHECK(peak_extra_bytes([&] { return matmul(slice.t(), c); }) == bytes_of({16, 32}, dt));
    require_close(matmul(slice.t(), c), reference_matmul(slice.t().contiguous(), c), 1e-4);
    // A broadcast batch (stride 0) is not materialised: [4, 64, 48] (expanded) @ [4, 48, 32].
    const Tensor batch_b = random({4, 48, 32}, 9, dt);
    CHECK(peak_extra_bytes([&] { return matmul(a.expand({4, 64, 48}), batch_b); }) == bytes_of({4, 64, 32}, dt));
    // Batched transposes (attention's q @ k^T) too.
    const Tensor q = random({4, 16, 8}, 10, dt), k = random({4, 16, 8}, 11, dt);
    CHECK(peak_extra_bytes([&] { return matmul(q, k.transpose(-1, -2)); }) == bytes_of({4, 16, 16}, dt));
    const Tensor scores = matmul(q, k.transpose(-1, -2));
    require_close(
        scores.narrow(0, 3, 1).reshape({16, 16}),
        reference_matmul(q.narrow(0, 3, 1).reshape({16, 8}), k.narrow(0, 3, 1).reshape({16, 8}).t().contiguous()),
        1e-4);
  }
}

TEST_CASE("one-row and one-column products (matrix-vector) match the reference in every layout", "[linalg]") {
  // Stored as is or transposed ([cols, rows] viewed through .t()), the vector a row or column slice.
  auto laid_out = [](const Tensor& t, bool transposed) { return transposed ? t.t().contiguous().t() : t; };
  for (DType dt : {kFloat32, kFloat64}) {
    const double tolerance = dt == kFloat32 ? 1e-4 : 1e-12;
    const std::vector<std::array<int64_t, 3>> shapes = {{1, 37, 23}, {23, 37, 1}, {1, 37, 1}, {1, 1, 5}, {5, 1, 1}};
    for (const auto& [M, K, N] : shapes)
      for (const bool ta : {false, true})
        for (const bool tb : {false, true}) {
          INFO("M " << M << ", K " << K << ", N " << N << ", a transposed " << ta << ", b transposed " << tb);
          const Tensor a = random({M, K}, 30, dt), b = random({K, N}, 31, dt);
          require_close(matmul(laid_out(a, ta), laid_out(b, tb)), reference_matmul(a, b), tolerance);
        }
    // Rows and columns of larger matrices (strides beyond the extent), and linear over one token.
    const Tensor big = random({9, 40}, 32, dt), w = random({40, 17}, 33, dt);
    const Tensor row = big.narrow(0, 4, 1), column = big.narrow(1, 7, 1);  // [1, 40], [9, 1] with stride 40
    require_close(matmul(row, w), reference_matmul(row.contiguous(), w), tolerance);
    require_close(matmul(random({3, 9}, 34, dt), column), reference_matmul(random({3, 9}, 34, dt), column.contiguous()),
                  tolerance);
    require_close(linear(row, w.t()), reference_matmul(row.contiguous(), w), tolerance);
  }
  // A wide one-row product is cut into column blocks like any other; the result does not depend on
  // the thread count.
  const int before = get_num_threads();
  const Tensor x = random({1, 1024}, 35, kFloat32), weight = random({4096, 1024}, 36, kFloat32);
  set_num_threads(1);
  const std::vector<float> one = linear(x, weight).to_vector<float>();
  set_num_threads(2);
  const std::vector<float> two = linear(x, weight).to_vector<float>();
  set_num_threads(before);
  CHECK(one == two);
  require_close(from_vector<float>(one, {1, 4096}), reference_matmul(x, weight.t().contiguous()), 1e-3);
}

TEST_CASE("matmul in f32 agrees with f64", "[linalg]") {
  const Tensor a = random({37, 129}, 12), b = random({129, 23}, 13);
  const std::vector<double> hi = matmul(a, b).to_vector<double>();
  const std::vector<float> lo = matmul(a.to(kFloat32), b.to(kFloat32)).to_vector<float>();
  REQUIRE(hi.size() == lo.size());
  for (size_t i = 0; i < hi.size(); ++i) REQUIRE(std::abs(lo[i] - hi[i]) <= 1e-4 * (1 + std::abs(hi[i])));
}

TEST_CASE("matmul and linear gradients pass gradcheck", "[linalg][gradcheck]") {
  const Tensor a = randn64({3, 4}, 1), b = randn64({4, 5}, 2);
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[0], v[1]); }, {a, b}));
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[1].t(), v[0].t()); }, {a, b}));
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[0], v[1]); }, {randn64({4}, 3), randn64({4}, 4)}));
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[0], v[1]); }, {randn64({4}, 5), b}));
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[0], v[1]); }, {a, randn64({4}, 6)}));
  CHECK(
      autograd::gradcheck([](auto& v) { return matmul(v[0], v[1]); }, {randn64({2, 3, 4}, 7), randn64({2, 4, 5}, 8)}));
  // Broadcast batch dims: the gradient of the broadcast operand sums over the batch.
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[0], v[1]); },
                            {randn64({2, 1, 3, 4}, 9), randn64({3, 4, 2}, 10)}));
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[0], v[1]); }, {randn64({2, 3, 4}, 11), b}));
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[0], v[1]); }, {a, randn64({2, 4, 5}, 12)}));
  CHECK(autograd::gradcheck([](auto& v) { return matmul(v[0], v[1].transpose(-1, -2)); },
                            {randn64({2, 3, 4}, 13), randn64({2, 5, 4}, 14)}));
  // Only one side needs a gradient.
  const Tensor fixed = randn64({4, 5}, 15).detach();
  CHECK(autograd::gradcheck([&](auto& v) { return matmul(v[0], fixed); }, {a}));
  const Tensor x = randn64({2, 3, 4}, 16), w = randn64({5, 4}, 17), bias = randn64({5}, 18);
  CHECK(autograd::gradcheck([](auto& v) { return linear(v[0], v[1], v[2]); }, {x, w, bias}));
  CHECK(autograd::gradcheck([](auto& v) { return linear(v[0], v[1]); }, {x, w}));
}

TEST_CASE("linear computes x @ weight^T + bias", "[linalg]") {
  const Tensor x = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor w = from_vector<double>({1, 0, -1, 2, 1, 0}, {2, 3});
  require_close(linear(x, w), {-2, 4, -2, 13});
  require_close(linear(x, w, from_vector<double>({10, 20})), {8, 24, 8, 33});
  CHECK(linear(zeros({4, 2, 3}, kFloat64), w).shape() == Shape{4, 2, 2});
  CHECK_THROWS_WITH(linear(x, zeros({2, 4}, kFloat64)),
                    Catch::Contains("linear") && Catch::Contains("[2, 3]") && Catch::Contains("[2, 4]"));
  CHECK_THROWS_WITH(linear(x, w, zeros({3}, kFloat64)),
                    Catch::Contains("linear") && Catch::Contains("bias") && Catch::Contains("[3]"));
  CHECK_THROWS_WITH(linear(x, zeros({6}, kFloat64)), Catch::Contains("linear") && Catch::Contains("weight"));
}

TEST_CASE("matmul errors name the operands", "[linalg]") {
  CHECK_THROWS_WITH(matmul(zeros({2, 3}), zeros({4, 5})), "matmul: [2, 3] @ [4, 5]: inner dimensions 3 and 4 differ");
  CHECK_THROWS_WITH(matmul(zeros({7, 2, 3}), zeros({7, 4, 5})), Catch::Contains("inner dimensions 3 and 4"));
  CHECK_THROWS_WITH(matmul(zeros({2, 2, 3}), zeros({5, 3, 1})),
                    Catch::Contains("matmul") && Catch::Contains("broadcast"));
  CHECK_THROWS_WITH(matmul(zeros({3}), zeros({4})), Catch::Contains("inner dimensions 3 and 4"));
  CHECK_THROWS_WITH(matmul(zeros({2, 3}), zeros({3}, kFloat64)), Catch::Contains("matmul") && Catch::Contains("dtype"));
  CHECK_THROWS_WITH(matmul(arange(4).reshape({2, 2}), arange(4).reshape({2, 2})),
                    Catch::Contains("matmul") && Catch::Contains("int64"));
  CHECK_THROWS_WITH(matmul(scalar_tensor(1.0), zeros({1})),
                    Catch::Contains("matmul") && Catch::Contains("at least one dim"));
}

TEST_CASE("large matmuls are bitwise identical for any thread count", "[linalg][determinism]") {
  const int before = get_num_threads();
  // Large enough to be cut into row blocks (M >= N) and column blocks (N > M).
  const Tensor a = random({512, 256}, 20, kFloat32), b = random({256, 384}, 21, kFloat32);
  const Tensor wide = random({64, 256}, 22, kFloat32), c = random({256, 1024}, 23, kFloat32);
  const Tensor batch_a = random({8, 128, 64}, 24, kFloat32), batch_b = random({8, 64, 256}, 25, kFloat32);
  auto run = [&](int threads) {
    set_num_threads(threads);
    return std::vector<std::vector<float>>{
        matmul(a, b).to_vector<float>(), matmul(a.t().contiguous().t(), b).to_vector<float>(),
        matmul(wide, c).to_vector<float>(), matmul(batch_a, batch_b).to_vector<float>()};
  };
  const auto one = run(1), two = run(2);
  set_num_threads(before);
  CHECK(one == two);
  require_close(from_vector<float>(one[0], {512, 384}), reference_matmul(a, b), 1e-4);
}

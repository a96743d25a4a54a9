// latent's own bfloat16 product kernels, gemm_bf16_small (attention's block products) and gemv_bf16
// (one-row products, decoding): every layout, ragged shapes, alpha and beta, against the float64 product
// of the same bfloat16 operands, to float32 accumulation error.
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "../helpers.hpp"
#include "core/gemm_bf16_small.hpp"
#include "core/gemv_bf16.hpp"

using namespace latent;

namespace {

std::vector<bfloat16> random_bf16(int64_t n, uint64_t seed) {
  Generator gen(seed);
  return randn({n}, kFloat32, &gen).to(kBFloat16).to_vector<bfloat16>();
}

using Kernel = std::function<void(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A,
                                  int64_t lda, const bfloat16* B, int64_t ldb, float beta, float* C, int64_t ldc)>;

// gemv_bf16 in gemm_bf16_small's terms: op(A) is one row, A[k] or (ta) A[k * lda].
void gemv_as_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A, int64_t lda,
                  const bfloat16* B, int64_t ldb, float beta, float* C, int64_t) {
  REQUIRE(M == 1);
  gemv_bf16(tb, N, K, alpha, A, ta ? lda : 1, B, ldb, beta, C);
}

// One product C = alpha op(A) op(B) + beta C0 with padded leading dimensions, checked entry by entry.
void check_product(const Kernel& kernel, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  INFO("ta " << ta << " tb " << tb << " M " << M << " N " << N << " K " << K << " alpha " << alpha << " beta " << beta);
  // Stored shapes: A is [M, K] or (ta) [K, M]; B is [K, N] or (tb) [N, K]; each row padded by 3.
  const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K, b_rows = tb ? N : K, b_cols = tb ? K : N;
  const int64_t lda = a_cols + 3, ldb = b_cols + 3, ldc = N + 3;
  std::vector<bfloat16> A = random_bf16(std::max<int64_t>(a_rows * lda, 1), 1 + M + K),
                        B = random_bf16(std::max<int64_t>(b_rows * ldb, 1), 2 + N + K);
  // NaN in the padding: an element read past a row (even times a zero) would turn its entries NaN.
  const bfloat16 nan = to_bfloat16(std::numeric_limits<float>::quiet_NaN());
  for (int64_t r = 0; r < a_rows; ++r) std::fill_n(A.begin() + r * lda + a_cols, 3, nan);
  for (int64_t r = 0; r < b_rows; ++r) std::fill_n(B.begin() + r * ldb + b_cols, 3, nan);
  Generator gen(3);
  std::vector<float> C = randn({M * ldc}, kFloat32, &gen).to_vector<float>();
  if (beta == 0.0f)  // beta = 0 must not read C (BLAS semantics): NaN there must not come through
    std::fill(C.begin(), C.end(), std::numeric_limits<float>::quiet_NaN());
  const std::vector<float> C0 = C;
  kernel(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  auto a = [&](int64_t m, int64_t k) { return static_cast<double>(to_float(ta ? A[k * lda + m] : A[m * lda + k])); };
  auto b = [&](int64_t k, int64_t n) { return static_cast<double>(to_float(tb ? B[n * ldb + k] : B[k * ldb + n])); };
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < ldc; ++n) {
      const float got = C[m * ldc + n];
      if (n >= N) {  // the padding between rows is left alone (NaN stays NaN when beta = 0 filled it)
        if (beta == 0.0f)
          REQUIRE(std::isnan(got));
        else
          REQUIRE(got == C0[m * ldc + n]);
        continue;
      }
      double exact = 0, magnitude = 0;
      for (int64_t k = 0; k < K; ++k) exact += a(m, k) * b(k, n), magnitude += std::abs(a(m, k) * b(k, n));
      const double c0 = beta == 0.0f ? 0.0 : beta * static_cast<double>(C0[m * ldc + n]);
      const double expected = alpha * exact + c0;
      // K float32 roundings in the sum, one in the scaling, one in adding beta C.
      const double bound = (K + 2) * 0x1p-24 * (std::abs(alpha) * magnitude + std::abs(c0)) + 1e-30;
      INFO("entry (" << m << ", " << n << "): got " << got << ", expected " << expected);
      REQUIRE(std::abs(got - expected) <= bound);
    }
}

}  // namespace

TEST_CASE("gemm_bf16_small: all layouts and ragged shapes against the float64 product", "[gemm_bf16_small]") {
  if (!cpu_has_avx512_bf16()) {
    WARN("this CPU has no AVX-512 BF16: gemm_bf16_small cannot run here");
    CHECK_THROWS_WITH(gemm_bf16_small(false, false, 1, 1, 1, 1.0f, nullptr, 1, nullptr, 1, 0.0f, nullptr, 1),
                      Catch::Contains("AVX-512 BF16"));
    return;
  }
  // N covers one to four vectors of 16 columns, a partial last vector and more than one panel of 64;
  // M covers whole register tiles and the rows left after them (23 leaves tiles of 16, 8, 4, 2 and 1
  // rows across the panel widths); K odd (a half pair at the end) and even, with one, two and three
  // blocks of 16 pairs (B given transposed is packed 16 x 16 words at a time).
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t N : {1, 16, 33, 48, 64, 70, 130})
        for (int64_t K : {1, 7, 48, 64, 67})
          for (int64_t M : {1, 13, 23, 25}) check_product(gemm_bf16_small, ta, tb, M, N, K, 0.5f, N % 2 ? 1.0f : 0.0f);
  check_product(gemm_bf16_small, false, true, 256, 64, 48, 0.125f, 0.0f);  // attention's shapes: scores q k^T,
  check_product(gemm_bf16_small, true, false, 64, 32, 255, 1.0f, 0.0f);    // dv = p^T do with an odd number of rows,
  check_product(gemm_bf16_small, false, false, 200, 48, 64, 0.25f, 1.0f);  // dq += ds k
  check_product(gemm_bf16_small, false, false, 4, 5, 0, 1.0f, 0.5f);       // K = 0: C = beta C
}

TEST_CASE("gemv_bf16: all layouts and ragged shapes against the float64 product", "[gemv_bf16]") {
  if (!cpu_has_avx512_bf16()) {
    WARN("this CPU has no AVX-512 BF16: gemv_bf16 cannot run here");
    CHECK_THROWS_WITH(gemv_bf16(false, 1, 1, 1.0f, nullptr, 1, nullptr, 1, 0.0f, nullptr), Catch::Contains("AVX-512 BF16"));
    return;
  }
  // N covers whole and leftover groups of four rows of B (stored [N, K]) and one to four vectors of 16
  // columns, a partial last one and more than one panel of 64 (B stored [K, N]); K covers a partial
  // group of 32, whole groups, more than one, and an odd count (a half pair).
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t N : {1, 3, 4, 7, 16, 33, 64, 70, 130})
        for (int64_t K : {1, 7, 31, 32, 33, 64, 100, 257})
          check_product(gemv_as_gemm, ta, tb, 1, N, K, 0.5f, N % 2 ? 1.0f : 0.0f);
  check_product(gemv_as_gemm, false, true, 1, 768, 256, 1.0f, 0.0f);  // a linear layer's weight, read as W^T
  check_product(gemv_as_gemm, false, true, 1, 5, 0, 1.0f, 0.5f);      // K = 0: c = beta c
  check_product(gemv_as_gemm, false, false, 1, 5, 0, 2.0f, 0.0f);
}

TEST_CASE("gemm_bf16_small: a NaN or infinity in an operand reaches the entries that read it", "[gemm_bf16_small]") {
  if (!cpu_has_avx512_bf16()) return;
  std::vector<bfloat16> A(4 * 6, to_bfloat16(1.0f)), B(6 * 3, to_bfloat16(0.5f));
  A[1 * 6 + 2] = to_bfloat16(std::numeric_limits<float>::quiet_NaN());
  A[3 * 6 + 5] = to_bfloat16(std::numeric_limits<float>::infinity());
  std::vector<float> C(4 * 3);
  gemm_bf16_small(false, false, 4, 3, 6, 1.0f, A.data(), 6, B.data(), 3, 0.0f, C.data(), 3);
  for (int64_t n = 0; n < 3; ++n) {
    CHECK(C[0 * 3 + n] == 3.0f);
    CHECK(std::isnan(C[1 * 3 + n]));
    CHECK(C[2 * 3 + n] == 3.0f);
    CHECK(C[3 * 3 + n] == std::numeric_limits<float>::infinity());
  }
}

// The process-wide matmul precision, checked against what this build and CPU can run.
#include "matmul_precision.hpp"

#include <cblas.h>
#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "error.hpp"
#include "gemm_bf16.hpp"

namespace latent {
namespace {

std::atomic<MatmulPrecision> current{MatmulPrecision::kHighest};

}  // namespace

void set_matmul_precision(MatmulPrecision precision) {
  std::string why;
  if (precision == MatmulPrecision::kBFloat16 && !bf16_matmul_supported(&why))
    fail("set_matmul_precision: bf16 matmuls cannot run here: {}", why);
  current.store(precision, std::memory_order_relaxed);
}

MatmulPrecision get_matmul_precision() { return current.load(std::memory_order_relaxed); }

MatmulPrecisionGuard::MatmulPrecisionGuard(MatmulPrecision precision) : previous_(get_matmul_precision()) {
  set_matmul_precision(precision);
}

MatmulPrecisionGuard::~MatmulPrecisionGuard() { current.store(previous_, std::memory_order_relaxed); }

MatmulPrecision parse_matmul_precision(const std::string& name) {
  if (name == "fp32" || name == "highest") return MatmulPrecision::kHighest;
  if (name == "bf16" || name == "bfloat16") return MatmulPrecision::kBFloat16;
  fail("matmul precision: expected fp32 or bf16, got '{}'", name);
}

const char* matmul_precision_name(MatmulPrecision precision) {
  return precision == MatmulPrecision::kBFloat16 ? "bf16" : "fp32";
}

bool bf16_matmul_supported(std::string* why) {
  // Read once: the engine asks before every backward node of a bf16 graph.
  static const char* const hidden = [] {
    const char* value = std::getenv("LATENT_TEST_NO_BF16");
    return value && std::strcmp(value, "1") == 0 ? "LATENT_TEST_NO_BF16=1 is set (a test hook standing for a build "
                                                   "without oneDNN or a CPU without avx512_bf16)"
                                                 : nullptr;
  }();
  if (hidden) {
    if (why) *why = hidden;
    return false;
  }
  return bf16_gemm_supported(why);
}

std::string describe_gemm_paths() {
  std::string why;
  const std::string bf16 = bf16_matmul_supported(&why) ? bf16_gemm_description() : "unavailable: " + why;
  return fmt::format("fp32 and f64 GEMMs on{}(one thread per pool task, core {}); bf16 GEMMs on {}", OPENBLAS_VERSION,
                     openblas_get_corename(), bf16);
}

}  // namespace latent

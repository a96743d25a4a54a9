// The process-wide matmul precision, checked against what this build and CPU can run.
#include "matmul_precision.hpp"

#include <cblas.h>
#include <fmt/format.h>

#include <atomic>

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

bool bf16_matmul_supported(std::string* why) { return bf16_gemm_supported(why); }

std::string describe_gemm_paths() {
  std::string why;
  const std::string bf16 = bf16_matmul_supported(&why) ? bf16_gemm_description() : "unavailable: " + why;
  return fmt::format("GEMMs (precision {} now): fp32 and f64 on{}(one thread per pool task, core {}); "
                     "bf16 on {}",
                     matmul_precision_name(get_matmul_precision()), OPENBLAS_VERSION, openblas_get_corename(), bf16);
}

}  // namespace latent

// The matmul precision setting for float32 GEMMs (like torch.set_float32_matmul_precision), its
// scoped guard, and the description of which GEMM path runs for each precision.
#pragma once
#include <string>

namespace latent {

// kHighest: float32 GEMMs in float32 (OpenBLAS). kBFloat16: float32 GEMMs round both operands to
// bfloat16 (nearest even) and accumulate and write float32 (oneDNN). float64 GEMMs never change.
enum class MatmulPrecision { kHighest, kBFloat16 };

// Process-wide. Setting kBFloat16 where it cannot run (a build without oneDNN, a CPU without
// AVX-512 BF16) throws latent::Error saying why; it never falls back to float32 silently.
void set_matmul_precision(MatmulPrecision precision);
MatmulPrecision get_matmul_precision();

// Sets a precision for its lifetime and restores the previous one (tests, evaluation at kHighest).
class MatmulPrecisionGuard {
 public:
  explicit MatmulPrecisionGuard(MatmulPrecision precision);
  ~MatmulPrecisionGuard();
  MatmulPrecisionGuard(const MatmulPrecisionGuard&) = delete;
  MatmulPrecisionGuard& operator=(const MatmulPrecisionGuard&) = delete;

 private:
  MatmulPrecision previous_;
};

// "fp32" (or "highest") and "bf16" (or "bfloat16"), as command lines spell them; anything else throws.
MatmulPrecision parse_matmul_precision(const std::string& name);
const char* matmul_precision_name(MatmulPrecision precision);  // "fp32" or "bf16"

// Whether kBFloat16 can run here; if not and `why` is given, one sentence saying why. The environment
// variable LATENT_TEST_NO_BF16=1 (read once per process) makes it answer no, so that the test suite
// checks the refusals of a build or CPU without bf16 on a machine that has it.
bool bf16_matmul_supported(std::string* why = nullptr);

// The GEMM library and kernel that run each precision, in one line for start-up reports: "fp32 and
// f64 GEMMs on OpenBLAS 0.3.21 (...); bf16 GEMMs on oneDNN 2.6.3 matmul, kernel ..." (or "unavailable: why").
std::string describe_gemm_paths();

}  // namespace latent

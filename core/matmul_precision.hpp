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

// Whether kBFloat16 can run here; if not and `why` is given, one sentence saying why.
bool bf16_matmul_supported(std::string* why = nullptr);

// One line per precision naming the GEMM library and kernel that run it, for start-up reports.
std::string describe_gemm_paths();

}  // namespace latent

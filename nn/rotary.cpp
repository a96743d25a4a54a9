// RoPE frequencies (plain and YaRN), the cos/sin tables, and RotaryEmbedding over the rotary_embedding op.
#include "rotary.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "../autograd/rotary.hpp"
#include "../core/strided.hpp"

namespace latent::nn {
namespace {

// YaRN's correction dim: the pair index whose wavelength fits `rotations` times into the original context,
//   corr(n) = dim * ln(original_max_position_embeddings / (n * 2 pi)) / (2 ln base).
double correction_dim(double rotations, int64_t dim, double base, int64_t original_max_positions) {
  return static_cast<double>(dim) *
         std::log(static_cast<double>(original_max_positions) / (rotations * 2 * std::numbers::pi)) /
         (2 * std::log(base));
}

}  // namespace

double yarn_mscale(double factor, double mscale) { return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0; }

double rope_attention_scale(const std::optional<YarnConfig>& yarn) {
  if (!yarn) return 1.0;
  const double m = yarn_mscale(yarn->factor, yarn->mscale_all_dim);
  return m * m;
}

std::vector<double> rope_inv_freq(int64_t dim, double base, const std::optional<YarnConfig>& yarn) {
  if (dim <= 0 || dim % 2 != 0) fail("rope_inv_freq: dim must be positive and even, got {}", dim);
  if (!(base > 1)) fail("rope_inv_freq: base must exceed 1, got {}", base);
  const int64_t half = dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[static_cast<size_t>(i)] = std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
  if (!yarn) return inv_freq;

  const YarnConfig& y = *yarn;
  if (!(y.factor > 0) || y.original_max_position_embeddings <= 0 || !(y.beta_fast > 0) || !(y.beta_slow > 0))
    fail("rope_inv_freq: YaRN needs positive factor, original_max_position_embeddings, beta_fast and beta_slow, got {}, {}, {}, {}",
        y.factor, y.original_max_position_embeddings, y.beta_fast, y.beta_slow);
  // Pairs rotating fast (many turns over the original context) keep their frequency, slow ones are
  // interpolated by 1/factor, and a linear ramp blends the two between the correction dims.
  const double low =
      std::max(std::floor(correction_dim(y.beta_fast, dim, base, y.original_max_position_embeddings)), 0.0);
  double high = std::min(std::ceil(correction_dim(y.beta_slow, dim, base, y.original_max_position_embeddings)),
                         static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoids 0/0 in the ramp
  for (int64_t i = 0; i < half; ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    double& f = inv_freq[static_cast<size_t>(i)];
    f = f / y.factor * ramp + f * (1 - ramp);
  }
  return inv_freq;
}

RotaryEmbedding::RotaryEmbedding(int64_t dim, int64_t max_position_embeddings, double base,
                                 std::optional<YarnConfig> yarn)
    : dim_(dim),
      max_positions_(max_position_embeddings),
      base_(base),
      yarn_(yarn),
      inv_freq_(rope_inv_freq(dim, base, yarn)) {
  if (max_position_embeddings <= 0)
    fail("RotaryEmbedding: max_position_embeddings must be positive, got {}", max_position_embeddings);
  // Hugging Face scales cos and sin by mscale(factor, mscale) / mscale(factor, mscale_all_dim); the
  // ratio is 1 for every released DeepSeek config (the official code never scales), but it keeps the
  // two YaRN magnitudes meaning what they mean in transformers.
  const double magnitude =
      yarn ? yarn_mscale(yarn->factor, yarn->mscale) / yarn_mscale(yarn->factor, yarn->mscale_all_dim) : 1.0;
  const int64_t half = dim / 2;
  cos64_ = Tensor::empty({max_positions_, half}, kFloat64);
  sin64_ = Tensor::empty({max_positions_, half}, kFloat64);
  double *pc = cos64_.data<double>(), *ps = sin64_.data<double>();
  for (int64_t p = 0; p < max_positions_; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * inv_freq_[static_cast<size_t>(i)];
      pc[p * half + i] = magnitude * std::cos(angle);
      ps[p * half + i] = magnitude * std::sin(angle);
    }
  cos32_ = cast_copy(cos64_, kFloat32);
  sin32_ = cast_copy(sin64_, kFloat32);
}

Tensor RotaryEmbedding::cos(DType dtype) const {
  return dispatch_floating(dtype, "RotaryEmbedding::cos",
                           [&]<class T>() { return (std::is_same_v<T, float> ? cos32_ : cos64_).clone(); });
}

Tensor RotaryEmbedding::sin(DType dtype) const {
  return dispatch_floating(dtype, "RotaryEmbedding::sin",
                           [&]<class T>() { return (std::is_same_v<T, float> ? sin32_ : sin64_).clone(); });
}

Tensor RotaryEmbedding::apply(const Tensor& x, int64_t start_position) const {
  if (x.dim() != 4)
    fail("RotaryEmbedding: expected x of shape [B, T, H, {}], got {}", dim_, shape_str(x.shape()));
  std::vector<int64_t> positions(static_cast<size_t>(x.size(1)));
  for (size_t t = 0; t < positions.size(); ++t) positions[t] = start_position + static_cast<int64_t>(t);
  return apply_positions(x, std::move(positions));
}

Tensor RotaryEmbedding::apply(const Tensor& x, const Tensor& positions) const {
  if (positions.dtype() != kInt64 || positions.dim() != 1)
    fail("RotaryEmbedding: positions must be an Int64 vector [T], got {} {}", dtype_name(positions.dtype()),
        shape_str(positions.shape()));
  return apply_positions(x, positions.to_vector<int64_t>());
}

Tensor RotaryEmbedding::apply_positions(const Tensor& x, std::vector<int64_t> positions) const {
  if (x.dim() != 4 || x.size(3) != dim_)
    fail("RotaryEmbedding: expected x of shape [B, T, H, {}], got {}", dim_, shape_str(x.shape()));
  for (const int64_t p : positions)
    if (p < 0 || p >= max_positions_)
      fail("RotaryEmbedding: position {} out of range [0, {}) of max_position_embeddings {}", p, max_positions_,
          max_positions_);
  const bool is_double = x.dtype() == kFloat64;
  return rotary_embedding(x, is_double ? cos64_ : cos32_, is_double ? sin64_ : sin32_, std::move(positions));
}

}  // namespace latent::nn

// Rotary position embedding (RoPE) over adjacent dim pairs, with DeepSeek's YaRN frequency scaling.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "../core/tensor.hpp"

namespace latent::nn {

// The `rope_scaling` block of a Hugging Face config whose type is "yarn" (field names as there).
struct YarnConfig {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0, beta_slow = 1.0, mscale = 1.0, mscale_all_dim = 1.0;
};

// YaRN's magnitude correction: 0.1 * mscale * ln(factor) + 1, or 1 when factor <= 1.
double yarn_mscale(double factor, double mscale = 1.0);

// The factor the softmax scale 1/sqrt(d_qk) is multiplied by: yarn_mscale(factor, mscale_all_dim)^2
// with YaRN, 1 without.
double rope_attention_scale(const std::optional<YarnConfig>& yarn);

// Per-pair angular frequencies theta_i, i = 0 .. dim/2 - 1, computed in double:
//   theta_i = base^(-2i/dim); with YaRN, theta_i = theta_i / factor * ramp_i + theta_i * (1 - ramp_i),
//   ramp_i = clamp((i - low) / (high - low), 0, 1) between the correction dims of beta_fast and beta_slow.
std::vector<double> rope_inv_freq(int64_t dim, double base, const std::optional<YarnConfig>& yarn = std::nullopt);

// Rotates each adjacent pair (x[2i], x[2i+1]) of the last dim at position p by the angle p * theta_i
// (the official DeepSeek code's complex view) through the rotary_embedding op (autograd/rotary.hpp).
// cos and sin are tabulated once, in double, up to max_position_embeddings. Holds no parameters;
// one instance can be shared by every layer.
class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t dim, int64_t max_position_embeddings, double base = 10000.0,
                  std::optional<YarnConfig> yarn = std::nullopt);

  // x [B, T, H, dim] (any strides, f32 or f64): position of x[:, t] is start_position + t.
  Tensor apply(const Tensor& x, int64_t start_position = 0) const;
  // x [B, T, H, dim] with explicit Int64 positions [T].
  Tensor apply(const Tensor& x, const Tensor& positions) const;

  int64_t dim() const { return dim_; }
  int64_t max_position_embeddings() const { return max_positions_; }
  double base() const { return base_; }
  const std::optional<YarnConfig>& yarn() const { return yarn_; }
  const std::vector<double>& inv_freq() const { return inv_freq_; }
  // Multiplier of the softmax scale (rope_attention_scale of the YaRN config).
  double attention_scale() const { return rope_attention_scale(yarn_); }
  // The tables, [max_position_embeddings, dim/2], in f32 or f64.
  Tensor cos(DType dtype = kFloat32) const;
  Tensor sin(DType dtype = kFloat32) const;

 private:
  Tensor apply_positions(const Tensor& x, std::vector<int64_t> positions) const;

  int64_t dim_, max_positions_;
  double base_;
  std::optional<YarnConfig> yarn_;
  std::vector<double> inv_freq_;
  Tensor cos64_, sin64_, cos32_, sin32_;  // [max_positions, dim/2]
};

}  // namespace latent::nn

// Multi-head Latent Attention (docs/deepseek_v3.md, "MLA"): queries through an optional low-rank bottleneck,
// keys and values decompressed from a kv_lora_rank latent plus one shared RoPE key. Two forms with
// the same result: the training form (per-head K/V) and the absorbed form that caches only the
// latent and the rotated key (kv_lora_rank + qk_rope_head_dim floats per token).
#pragma once
#include <memory>

#include "../nn/linear.hpp"
#include "../nn/norm.hpp"
#include "../nn/rotary.hpp"
#include "deepseek_v3_config.hpp"

namespace latent::models {

// Per-layer cache of the absorbed form: for each past token, its normalised latent c_kv followed by
// its rotated k_pe, in one row. The rows are the attention's keys as they stand and their first
// kv_lora_rank columns its values, so a decoding step reads the cache in place.
struct LatentCache {
  Tensor rows;  // [B, capacity, kv_lora_rank + qk_rope_head_dim]
  int64_t length = 0;
  // Under MatmulPrecision::kBFloat16, rows rounded to bfloat16 (the first `rounded_length` positions
  // current), attached to rows' storage as its rounded copy: the attention products read it instead of
  // rounding the whole cache again for every new token (keep_rounded_rows, core/gemm.hpp).
  Tensor rounded;
  int64_t rounded_length = 0;
  LatentCache(int64_t batch, int64_t capacity, const DeepSeekV3Config& config, DType dtype = kFloat32);
  int64_t capacity() const { return rows.size(1); }
  int64_t floats_per_token() const { return rows.size(2); }
};

class MultiHeadLatentAttention : public nn::Callable<MultiHeadLatentAttention> {
 public:
  MultiHeadLatentAttention(const DeepSeekV3Config& config, std::shared_ptr<const nn::RotaryEmbedding> rope);
  // Training form over x [B, T, hidden] at positions 0..T-1 (causal).
  Tensor forward(const Tensor& x) const;
  // Absorbed form: x holds the next T tokens after cache.length; appends them to the cache.
  Tensor forward_absorbed(const Tensor& x, LatentCache& cache) const;

  std::shared_ptr<nn::Linear> q_a_proj, q_b_proj, q_proj;  // q_proj alone when q_lora_rank is 0
  std::shared_ptr<nn::RMSNorm> q_a_layernorm;
  std::shared_ptr<nn::Linear> kv_a_proj_with_mqa, kv_b_proj, o_proj;
  std::shared_ptr<nn::RMSNorm> kv_a_layernorm;

 private:
  Tensor queries(const Tensor& x) const;  // [B, T, H, qk_head_dim]

  int64_t heads_, nope_dim_, rope_dim_, v_dim_, kv_rank_;
  double scale_;
  std::shared_ptr<const nn::RotaryEmbedding> rope_;
};

}  // namespace latent::models

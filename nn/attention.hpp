// nn::CausalSelfAttention: Llama-style multi-head self-attention with grouped-query heads, RoPE and a
// per-layer KV cache for generation, on the fused scaled_dot_product_attention op.
#pragma once
#include <memory>
#include <optional>

#include "linear.hpp"
#include "rotary.hpp"

namespace latent::nn {

// The keys and values of one attention layer for the tokens seen so far, in a buffer of fixed
// capacity allocated by the first append. Holds data only: appending copies without autograd.
class KVCache {
 public:
  explicit KVCache(int64_t capacity);
  // Appends k [B, T, Hkv, Dk] and v [B, T, Hkv, Dv] at positions [length(), length() + T).
  void append(const Tensor& k, const Tensor& v);
  Tensor keys() const;    // [B, length(), Hkv, Dk], a view of the buffer
  Tensor values() const;  // [B, length(), Hkv, Dv]
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  void reset() { length_ = 0; }  // keeps the buffer for the next sequence

 private:
  int64_t capacity_, length_ = 0;
  Tensor keys_, values_;  // [B, capacity, Hkv, D]
  // Under MatmulPrecision::kBFloat16 their bfloat16 copies, kept current as positions are appended
  // (the first rounded_length_), which attention reads instead of rounding the whole cache per token.
  Tensor keys_rounded_, values_rounded_;
  int64_t rounded_length_ = 0;
};

struct CausalSelfAttentionOptions {
  int64_t head_dim = 0;                    // 0: hidden_size / num_heads
  int64_t max_position_embeddings = 2048;  // size of the RoPE tables
  double rope_theta = 10000.0;
  std::optional<YarnConfig> rope_scaling;  // YaRN, as DeepSeek's rope_scaling
  bool bias = false;                       // Hugging Face's attention_bias: biases on all four projections
};

// y = o_proj(attention(rope(q_proj(x)), rope(k_proj(x)), v_proj(x))), causal, with num_heads query
// heads sharing num_kv_heads key/value heads. RoPE rotates adjacent dim pairs (DeepSeek's
// convention; Hugging Face Llama checkpoints pair i with i + head_dim/2, so their q_proj/k_proj rows
// would need de-interleaving). The softmax scale is rope.attention_scale() / sqrt(head_dim).
class CausalSelfAttention : public Callable<CausalSelfAttention> {
 public:
  CausalSelfAttention(int64_t hidden_size, int64_t num_heads, int64_t num_kv_heads,
                      const CausalSelfAttentionOptions& options = {});
  // x [B, T, hidden_size] -> [B, T, hidden_size]. Without a cache, x holds positions 0 .. T-1. With
  // one, x holds the T tokens after the cache->length() already cached ones, whose keys and values
  // are appended; the cache is for inference and refuses to run while gradients are recorded.
  Tensor forward(const Tensor& x, KVCache* cache = nullptr) const;

  int64_t hidden_size, num_heads, num_kv_heads, head_dim;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<const RotaryEmbedding> rotary;
};

}  // namespace latent::nn

// Llama: the dense pre-norm transformer of Hugging Face's LlamaForCausalLM (GQA attention with RoPE,
// SwiGLU, RMSNorm), with its training loss, KV-cached generation and HF-layout checkpoints.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../nn/attention.hpp"
#include "../nn/embedding.hpp"
#include "../nn/mlp.hpp"
#include "../nn/norm.hpp"
#include "causal_lm.hpp"
#include "llama_config.hpp"

namespace latent::models {

// h += self_attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h)).
class LlamaDecoderLayer : public nn::Callable<LlamaDecoderLayer> {
 public:
  explicit LlamaDecoderLayer(const LlamaConfig& config);
  // h [B, T, hidden] -> [B, T, hidden]. With a cache, h holds the T tokens after the cached ones.
  Tensor forward(const Tensor& h, nn::KVCache* cache = nullptr) const;

  std::shared_ptr<nn::CausalSelfAttention> self_attn;
  std::shared_ptr<nn::SwiGLU> mlp;
  std::shared_ptr<nn::RMSNorm> input_layernorm, post_attention_layernorm;
};

class LlamaModel : public nn::Module {  // HF's "model." prefix
 public:
  explicit LlamaModel(const LlamaConfig& config);
  std::shared_ptr<nn::Embedding> embed_tokens;
  std::shared_ptr<nn::ModuleList> layers;  // of LlamaDecoderLayer
  std::shared_ptr<nn::RMSNorm> norm;
};

// named_parameters() and state_dict() carry the HF tensor names ("model.layers.0.self_attn.q_proj.weight").
// The rows of q_proj and k_proj are held in the adjacent-pair order nn::RotaryEmbedding rotates;
// HF checkpoints pair dim i with i + head_dim/2 (rotate_half). hf_state_dict() / load_hf_state_dict()
// convert, and from_pretrained / save_pretrained use them, so files stay in HF layout.
class Llama : public CausalLM {
 public:
  explicit Llama(const LlamaConfig& config);  // weights ~ N(0, initializer_range^2), norms 1, biases 0
  // config.json + model.safetensors or shards, F8_E4M3 weights with block scales when config.json has
  // a quantization_config, streamed as DeepSeekV3::from_pretrained streams them.
  static std::shared_ptr<Llama> from_pretrained(const std::string& dir);
  using CausalLM::save_pretrained;
  void save_pretrained(const std::string& dir, const SaveOptions& options) const override;  // atomic files, HF layout
  void config_to_json_file(const std::string& path) const override { config_.to_json_file(path); }

  std::string model_type() const override { return config_.model_type; }
  int64_t vocab_size() const override { return config_.vocab_size; }
  int64_t max_position_embeddings() const override { return config_.max_position_embeddings; }

  // The checkpoint's view: q/k rows in rotate_half order (new tensors), every other entry a detached
  // handle of the parameter.
  std::map<std::string, Tensor> hf_state_dict() const;
  // Strict load of HF-layout tensors. A tied model accepts a stored lm_head.weight equal to the embedding.
  void load_hf_state_dict(const std::map<std::string, Tensor>& state);
  // How its checkpoints differ from state_dict(): q/k rows in rotate_half order, a tied head that
  // may be stored. With load_checkpoint, loads a directory into an existing model (of any dtype).
  CheckpointLayout checkpoint_layout() const;

  Tensor forward(const Tensor& input_ids) override;  // Int64 [B, T] -> logits [B, T, V]
  // Logits [B, T, V] of ids that follow the tokens the caches hold; appends their keys and values.
  // Inference only (runs without recording gradients).
  Tensor forward(const Tensor& input_ids, std::vector<nn::KVCache>& caches);
  std::vector<nn::KVCache> make_caches(int64_t capacity) const;  // one per layer, up to capacity positions

  // Mean next-token cross-entropy: ids Int64 [B, T+1], inputs ids[:, :T], targets ids[:, 1:].
  Tensor loss(const Tensor& ids);
  // As HF's `labels`: labels [B, T+1] parallel to ids, targets labels[:, 1:]; -100 marks positions
  // that do not count (prompts, padding). loss(ids) == loss(ids, ids).
  Tensor loss(const Tensor& ids, const Tensor& labels);
  LossTerms loss_terms(const Tensor& ids, const LossOptions& options = {}) override;  // just "ce": loss(ids)

  const LlamaConfig& config() const { return config_; }
  std::shared_ptr<LlamaModel> model;
  std::shared_ptr<nn::Linear> lm_head;  // null when tie_word_embeddings (the embedding is the head)

 protected:
  DecodeStep start_decoding(int64_t capacity) override;  // one KV cache per layer

 private:
  Tensor logits(const Tensor& input_ids);  // forward without the id checks
  Tensor head(const Tensor& h) const;      // final norm, then lm_head (or the tied embedding)

  LlamaConfig config_;
};

// Row order conversions for q_proj/k_proj weights [num_heads * head_dim, in] (or biases
// [num_heads * head_dim]), per head h and i < head_dim/2:
//   adjacent[h*D + 2i] = rotate_half[h*D + i],  adjacent[h*D + 2i + 1] = rotate_half[h*D + i + D/2].
// Rotating adjacent pairs of the first gives the same q.k as rotate_half on the second.
Tensor rotate_half_rows_to_adjacent(const Tensor& weight, int64_t num_heads, int64_t head_dim);
Tensor adjacent_rows_to_rotate_half(const Tensor& weight, int64_t num_heads, int64_t head_dim);

}  // namespace latent::models

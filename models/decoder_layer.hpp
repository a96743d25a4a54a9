// One pre-norm DeepSeek-V3 block: h += MLA(input_layernorm(h)); h += FFN(post_attention_layernorm(h)),
// the FFN being a dense SwiGLU before first_k_dense_replace and DeepSeekMoE after.
#pragma once
#include <memory>

#include "../nn/mlp.hpp"
#include "../nn/norm.hpp"
#include "mla.hpp"
#include "moe.hpp"

namespace latent::models {

class DecoderLayer : public nn::Callable<DecoderLayer> {
 public:
  DecoderLayer(const DeepSeekV3Config& config, bool moe, std::shared_ptr<const nn::RotaryEmbedding> rope);
  Tensor forward(const Tensor& h);                          // training form
  Tensor forward_absorbed(const Tensor& h, LatentCache& cache);  // decoding with the latent cache

  std::shared_ptr<nn::RMSNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<MultiHeadLatentAttention> self_attn;
  std::shared_ptr<nn::SwiGLU> dense_mlp;  // exactly one of dense_mlp / moe is set (both named "mlp")
  std::shared_ptr<DeepSeekMoE> moe;

 private:
  // h + FFN(post_attention_layernorm(h)); an MoE records its routing statistics when asked to.
  Tensor feed_forward(const Tensor& h, bool routing_statistics);
};

// Multi-token prediction module k (docs/deepseek_v3.md, "MTP"): combines the embedding of token j+k with the
// previous depth's hidden state at j, runs one MoE decoder layer, and predicts token j+k+1 through
// the main model's head. Stored as layer num_hidden_layers + k - 1.
class MTPLayer : public DecoderLayer {
 public:
  MTPLayer(const DeepSeekV3Config& config, std::shared_ptr<const nn::RotaryEmbedding> rope);
  // embedded: embed_tokens(ids[j+k]) [B, T', hidden]; previous: h_{k-1}[j] [B, T', hidden] -> h_k
  Tensor forward(const Tensor& embedded, const Tensor& previous);
  // Hides DecoderLayer's call operator, which would run the one-input forward.
  Tensor operator()(const Tensor& embedded, const Tensor& previous) {
    nn::ForwardScope scope(*this);
    return forward(embedded, previous);
  }

  std::shared_ptr<nn::RMSNorm> enorm, hnorm;
  std::shared_ptr<nn::Linear> eh_proj;  // [hidden, 2*hidden]: embedding first, then hidden state
  struct SharedHead : nn::Module {
    explicit SharedHead(const DeepSeekV3Config& config);
    std::shared_ptr<nn::RMSNorm> norm;  // the head itself is the main model's lm_head
  };
  std::shared_ptr<SharedHead> shared_head;
};

}  // namespace latent::models

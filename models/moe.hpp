// DeepSeekMoE: a router (MoEGate) picks top-k routed experts per token; their SwiGLU outputs,
// weighted by the gate, are added to the shared experts' output. All experts run as one op,
// moe_experts (autograd/moe_experts.hpp), each over exactly its tokens.
#pragma once
#include <memory>
#include <string>

#include "../nn/mlp.hpp"
#include "../nn/module.hpp"

namespace latent::models {

struct DeepSeekV3Config;
enum class TopkMethod;

// What one MoE layer's routing did in the last forward pass with grad-tracked statistics.
struct RoutingStats {
  Tensor expert_ids;  // Int64 [N, K]: selected experts per token (ascending)
  Tensor loads;       // Int64 [E]: (token, slot) assignments per expert over the batch
  Tensor balance;     // 0-dim: this layer's balance loss (sequence-wise for V3, expert-level for V2)
};

class MoEGate : public nn::Module {
 public:
  explicit MoEGate(const DeepSeekV3Config& config);
  struct Routing {
    Tensor expert_ids;  // Int64 [N, K], ascending per token
    Tensor weights;     // [N, K] gate weights (differentiable), in the same order as expert_ids
    Tensor scores;      // [N, E] sigmoid (V3) or softmax (V2) scores, differentiable
  };
  // x: [N, hidden] -> routing for N tokens.
  Routing route(const Tensor& x) const;
  // The balance loss for `batch` sequences of `seq_len` tokens each (scores in token order).
  Tensor balance_loss(const Routing& routing, int64_t batch, int64_t seq_len) const;

  Tensor weight;                   // [E, hidden]
  Tensor e_score_correction_bias;  // [E] buffer, selection only (noaux_tc); undefined otherwise

 private:
  int64_t n_routed_experts_, top_k_, n_group_, topk_group_;
  double routed_scaling_factor_;
  bool norm_topk_prob_, sigmoid_;
  TopkMethod topk_method_;
};

class DeepSeekMoE : public nn::Callable<DeepSeekMoE> {
 public:
  explicit DeepSeekMoE(const DeepSeekV3Config& config);
  // x: [B, T, hidden] -> [B, T, hidden]; routing statistics of this call go to last_stats().
  Tensor forward(const Tensor& x);
  // The same output without the routing statistics, which only a loss reads (cached decoding).
  Tensor forward_without_statistics(const Tensor& x) const;
  const RoutingStats& last_stats() const { return stats_; }
  // b_i += gamma * sign(mean(load) - load_i) from last_stats().loads (aux-loss-free balancing).
  void update_expert_bias(double gamma);
  void update_expert_bias(double gamma, const Tensor& loads);  // loads summed elsewhere (e.g. over ranks)

  std::shared_ptr<MoEGate> gate;
  std::shared_ptr<nn::ModuleList> experts;
  std::shared_ptr<nn::SwiGLU> shared_experts;  // null when n_shared_experts is 0

 private:
  // The shared and routed experts over x [N, hidden] as `routing` sends it: [N, hidden].
  Tensor experts_output(const Tensor& x, const MoEGate::Routing& routing) const;

  RoutingStats stats_;
};

}  // namespace latent::models

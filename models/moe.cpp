// DeepSeekMoE: routing (the gate and its balance loss), the experts through the moe_experts op, and
// the bias update of aux-loss-free load balancing.
#include "moe.hpp"

#include <algorithm>
#include <limits>
#include <numeric>

#include "../autograd/anomaly.hpp"
#include "../autograd/ops.hpp"
#include "../core/factory.hpp"
#include "../core/matmul_precision.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "../nn/init.hpp"
#include "deepseek_v3_config.hpp"

namespace latent::models {
namespace {

// Indices of the k largest values of `values`, largest first (ties: lower index first). One pass that
// keeps the best k so far in order: k is a handful (experts per token, groups kept), and sorting all
// the indices of every token took a third of the gate's time (perf).
void top_indices(const std::vector<double>& values, int64_t k, std::vector<int64_t>& order) {
  order.clear();
  if (k <= 0) return;
  const auto kept = static_cast<size_t>(k);
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    // Later indices lose ties, so an entry only gets in ahead of strictly smaller values.
    if (order.size() == kept) {
      if (!(v > values[static_cast<size_t>(order.back())])) continue;
      order.back() = static_cast<int64_t>(i);
    } else {
      order.push_back(static_cast<int64_t>(i));
    }
    for (size_t j = order.size() - 1; j > 0 && v > values[static_cast<size_t>(order[j - 1])]; --j)
      std::swap(order[j], order[j - 1]);
  }
}

// The sum of the two largest of x[0..n) (n >= 2), or the largest (n == 1) plus zero.
double best_two_sum(const double* x, int64_t n) {
  double first = x[0], second = n > 1 ? x[1] : 0.0;
  if (n > 1 && second > first) std::swap(first, second);
  for (int64_t i = 2; i < n; ++i) {
    if (x[i] > first) {
      second = first, first = x[i];
    } else if (x[i] > second) {
      second = x[i];
    }
  }
  return first + second;
}

// An expert module's weights for the experts op, labelled with its path in anomaly mode, the only
// reader of labels (building a path walks the module tree, every call).
ExpertWeights expert_weights(const nn::SwiGLU& mlp) {
  return {mlp.gate_proj->weight, mlp.up_proj->weight, mlp.down_proj->weight,
          autograd::is_anomaly_enabled() ? mlp.module_path() : std::string()};
}

}  // namespace

MoEGate::MoEGate(const DeepSeekV3Config& c)
    : n_routed_experts_(c.n_routed_experts),
      top_k_(c.num_experts_per_tok),
      n_group_(c.n_group),
      topk_group_(c.topk_group),
      routed_scaling_factor_(c.routed_scaling_factor),
      norm_topk_prob_(c.norm_topk_prob),
      sigmoid_(c.scoring_func == ScoringFunc::kSigmoid),
      topk_method_(c.topk_method) {
  weight = register_parameter("weight", Tensor::empty({c.n_routed_experts, c.hidden_size}));
  nn::init::normal_(weight, 0.0, c.initializer_range);
  if (topk_method_ == TopkMethod::kNoauxTc)
    e_score_correction_bias = register_buffer("e_score_correction_bias", zeros({c.n_routed_experts}));
}

MoEGate::Routing MoEGate::route(const Tensor& x) const {
  nn::ForwardScope scope(*this);
  // The router's scores stay float32 under bf16 matmul precision (as DeepSeek-V3 keeps its gating in
  // high precision): bf16 rounding would flip near-tied top-k choices, and a flipped expert changes
  // a token's output by far more than the rounding itself. Its backward products stay float32 too:
  // a node's backward runs at the precision of its forward (autograd/node.hpp).
  const Tensor logits = [&] {
    MatmulPrecisionGuard highest(MatmulPrecision::kHighest);
    return linear(x, weight);
  }();
  Routing r;
  r.scores = sigmoid_ ? sigmoid(logits) : softmax(logits, -1);
  const int64_t N = x.size(0), E = n_routed_experts_, K = top_k_;
  const Tensor scores = r.scores.detach().to(kFloat64);
  const double* s = scores.data<double>();
  std::vector<double> bias(static_cast<size_t>(E), 0.0);
  if (e_score_correction_bias.defined()) bias = e_score_correction_bias.to(kFloat64).to_vector<double>();
  const bool grouped = n_group_ > 1 && topk_method_ != TopkMethod::kGreedy;
  const int64_t per_group = E / n_group_;

  r.expert_ids = Tensor::empty({N, K}, kInt64);
  int64_t* ids = r.expert_ids.data<int64_t>();
  parallel_for(N, 256, [&](int64_t begin, int64_t end) {
    std::vector<double> choice(static_cast<size_t>(E)), group_score(static_cast<size_t>(n_group_));
    std::vector<int64_t> kept_groups, picked;
    std::vector<bool> kept(static_cast<size_t>(n_group_));
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t e = 0; e < E; ++e) choice[static_cast<size_t>(e)] = s[n * E + e] + bias[static_cast<size_t>(e)];
      if (grouped) {
        // V3: a group's score is the sum of its two best biased scores; V2: its best score.
        for (int64_t g = 0; g < n_group_; ++g) {
          const double* members = choice.data() + g * per_group;
          group_score[static_cast<size_t>(g)] = topk_method_ == TopkMethod::kNoauxTc
                                                    ? best_two_sum(members, per_group)
                                                    : *std::max_element(members, members + per_group);
        }
        top_indices(group_score, topk_group_, kept_groups);
        std::fill(kept.begin(), kept.end(), false);
        for (int64_t g : kept_groups) kept[static_cast<size_t>(g)] = true;
        for (int64_t e = 0; e < E; ++e)  // experts of dropped groups can never be selected
          if (!kept[static_cast<size_t>(e / per_group)]) choice[static_cast<size_t>(e)] = -std::numeric_limits<double>::infinity();
      }
      top_indices(choice, K, picked);
      std::sort(picked.begin(), picked.end());
      std::copy(picked.begin(), picked.end(), ids + n * K);
    }
  });

  Tensor w = gather(r.scores, 1, r.expert_ids);
  if (sigmoid_) {
    if (norm_topk_prob_) w = w / sum(w, {-1}, true);
    r.weights = w * routed_scaling_factor_;
  } else if (norm_topk_prob_ && K > 1) {  // DeepSeek-V2: normalised weights are not scaled
    r.weights = w / (sum(w, {-1}, true) + 1e-20);
  } else {
    r.weights = w * routed_scaling_factor_;
  }
  return r;
}

Tensor MoEGate::balance_loss(const Routing& routing, int64_t batch, int64_t seq_len) const {
  nn::ForwardScope scope(*this);
  const int64_t E = n_routed_experts_, K = top_k_;
  // f_i = E / (K T) * #{t : expert i counted for token t}; no gradient flows through f.
  std::vector<double> f(static_cast<size_t>(batch * E), 0.0);
  const double unit = static_cast<double>(E) / static_cast<double>(K * seq_len);
  if (sigmoid_) {  // V3: plain top-K of the unbiased scores, without group limits
    const std::vector<double> s = routing.scores.detach().to(kFloat64).to_vector<double>();
    parallel_for(batch, 1, [&](int64_t begin, int64_t end) {  // a sequence's counts are its own
      std::vector<double> row(static_cast<size_t>(E));
      std::vector<int64_t> picked;
      for (int64_t n = begin * seq_len; n < end * seq_len; ++n) {
        std::copy(s.begin() + n * E, s.begin() + (n + 1) * E, row.begin());
        top_indices(row, K, picked);
        for (int64_t e : picked) f[static_cast<size_t>((n / seq_len) * E + e)] += unit;
      }
    });
  } else {  // V2: the experts actually selected
    const std::vector<int64_t> ids = routing.expert_ids.to_vector<int64_t>();
    for (int64_t n = 0; n < batch * seq_len; ++n)
      for (int64_t k = 0; k < K; ++k) f[static_cast<size_t>((n / seq_len) * E + ids[static_cast<size_t>(n * K + k)])] += unit;
  }
  const Tensor fi = from_vector(f, {batch, E}).to(routing.scores.dtype());
  Tensor s = reshape(routing.scores, {batch, seq_len, E});
  if (sigmoid_) s = s / sum(s, {-1}, true);  // V3 normalises the sigmoid scores per token
  const Tensor P = mean(s, {1});             // [batch, E]
  return mean(sum(fi * P, {-1}));
}

DeepSeekMoE::DeepSeekMoE(const DeepSeekV3Config& c) {
  gate = register_module("gate", std::make_shared<MoEGate>(c));
  experts = register_module("experts", std::make_shared<nn::ModuleList>());
  for (int64_t e = 0; e < c.n_routed_experts; ++e)
    experts->push_back(std::make_shared<nn::SwiGLU>(c.hidden_size, c.moe_intermediate_size));
  if (c.n_shared_experts > 0)
    shared_experts = register_module(
        "shared_experts", std::make_shared<nn::SwiGLU>(c.hidden_size, c.moe_intermediate_size * c.n_shared_experts));
}

Tensor DeepSeekMoE::forward(const Tensor& x) {
  if (x.dim() != 3) fail("DeepSeekMoE: input must be [B, T, hidden], got {}", shape_str(x.shape()));
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), N = B * T;
  const Tensor flat = reshape(x, {N, D});
  const MoEGate::Routing routing = gate->route(flat);
  const Tensor y = experts_output(flat, routing);

  // The loads for the statistics and the bias update; the experts op sorts the assignments itself.
  const int64_t* ids = routing.expert_ids.data<int64_t>();
  std::vector<int64_t> loads(experts->size(), 0);
  for (int64_t i = 0; i < routing.expert_ids.numel(); ++i) ++loads[static_cast<size_t>(ids[i])];
  stats_.expert_ids = routing.expert_ids;
  stats_.loads = from_vector(loads);
  stats_.balance = gate->balance_loss(routing, B, T);
  return reshape(y, {B, T, D});
}

Tensor DeepSeekMoE::forward_without_statistics(const Tensor& x) const {
  nn::ForwardScope scope(*this);
  if (x.dim() != 3) fail("DeepSeekMoE: input must be [B, T, hidden], got {}", shape_str(x.shape()));
  const Tensor flat = reshape(x, {x.size(0) * x.size(1), x.size(2)});
  return reshape(experts_output(flat, gate->route(flat)), x.shape());
}

Tensor DeepSeekMoE::experts_output(const Tensor& x, const MoEGate::Routing& routing) const {
  std::vector<ExpertWeights> routed(experts->size());
  for (size_t e = 0; e < routed.size(); ++e) routed[e] = expert_weights(*experts->at<nn::SwiGLU>(e));
  return moe_experts(x, routing.weights, routing.expert_ids, routed,
                     shared_experts ? expert_weights(*shared_experts) : ExpertWeights{});
}

void DeepSeekMoE::update_expert_bias(double gamma) {
  if (!stats_.loads.defined()) fail("update_expert_bias: no forward pass has routed tokens yet");
  update_expert_bias(gamma, stats_.loads);
}

void DeepSeekMoE::update_expert_bias(double gamma, const Tensor& loads) {
  Tensor& bias = gate->e_score_correction_bias;
  if (!bias.defined())
    fail("update_expert_bias: this MoE layer has no e_score_correction_bias (its topk_method is not noaux_tc)");
  if (loads.shape() != bias.shape())
    fail("update_expert_bias: loads {} do not match {} experts", shape_str(loads.shape()), shape_str(bias.shape()));
  const std::vector<double> c = loads.to(kFloat64).to_vector<double>();
  const double mean_load = std::accumulate(c.begin(), c.end(), 0.0) / static_cast<double>(c.size());
  std::vector<double> b = bias.to(kFloat64).to_vector<double>();
  for (size_t i = 0; i < b.size(); ++i) b[i] += gamma * static_cast<double>((mean_load > c[i]) - (mean_load < c[i]));
  copy_into(bias, from_vector(b, bias.shape()));
}

}  // namespace latent::models

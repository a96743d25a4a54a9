// DeepSeekMoE routing, dispatch and load balancing (MODEL.md, "DeepSeekMoE gate" and "Load balancing").
#include "moe.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <type_traits>

#include "../autograd/anomaly.hpp"
#include "../autograd/node.hpp"
#include "../autograd/ops.hpp"
#include "../core/factory.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "../nn/init.hpp"
#include "deepseek_v3_config.hpp"

namespace latent::models {
namespace {

// Indices of the k largest values of `values` (ties: lower index first).
void top_indices(const std::vector<double>& values, int64_t k, std::vector<int64_t>& order) {
  order.resize(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)] ||
           (values[static_cast<size_t>(a)] == values[static_cast<size_t>(b)] && a < b);
  });
  order.resize(static_cast<size_t>(k));
}

// ---- fused experts ------------------------------------------------------------------------------
// Every expert of a layer as one differentiable op. Rows: the routed (token, slot) assignments sorted
// by expert (rows [0, N*K)), then, with shared experts, every token once (rows [N*K, N*K + N)). Each
// expert owns a contiguous run of rows and runs as one task: gather its tokens, three GEMMs back to
// back, write its rows. Tokens then sum their rows in slot order (shared row first), so the result
// does not depend on which thread ran which expert.
//
// Forward, per expert with rows r (token t_r, gate weight w_r; w = 1 for shared experts):
//   g = x_t Wg^T,  u = x_t Wu^T,  h = silu(g) * u,  out_r = w_r (h_r Wd^T),   y_t = sum of its out_r.
// Backward, with dy_r = dy[t_r] and dh' = dy_r Wd (the gradient of h before the gate weight):
//   dw_r = dh'_r . h_r,  dWd = dy^T (w h),  dh = w dh',  (dg, du) = swiglu backward,
//   dWg = dg^T x_t,  dWu = du^T x_t,  dx_r = dg Wg + du Wu,  dx_t = sum of its dx_r.
// Kept for the backward: g, u, h and the gathered rows of x (x itself the router keeps anyway).
struct ExpertDispatch {
  struct Expert {
    Tensor gate, up, down;  // weights [I, D], [I, D], [D, I], detached
    bool routed;            // false: a shared expert over every token, weight 1
    int64_t first, rows, width, activations;  // its rows, its I, and where its [rows, I] activations start
  };
  int64_t tokens = 0, routed_rows = 0, activation_size = 0;
  bool shared = false;                            // rows [N*K, N*K + N) exist
  std::vector<int64_t> token, slot, row_of_slot;  // per routed row: token, slot n*K+k; per slot: its row
  std::vector<Expert> experts;                    // only experts with rows
  std::vector<Tensor> weights;                    // gate, up, down of each expert: the op's inputs after x and w

  void add(const nn::SwiGLU& mlp, int64_t expert, int64_t first, int64_t rows) {
    const Tensor& g = mlp.gate_proj->weight;
    const int64_t width = g.size(0);
    experts.push_back({g.detach(), mlp.up_proj->weight.detach(), mlp.down_proj->weight.detach(), expert >= 0,
                       expert >= 0 ? first : routed_rows + first, rows, width, activation_size});
    activation_size += rows * width;
    weights.insert(weights.end(), {g, mlp.up_proj->weight, mlp.down_proj->weight});
    shared = shared || expert < 0;
  }
  int64_t rows() const { return routed_rows + (shared ? tokens : 0); }
};

// The expert's input rows: x itself for a shared expert, else its tokens gathered into `buffer`.
template <class T>
const T* expert_rows(const ExpertDispatch& d, const ExpertDispatch::Expert& e, const T* x, T* buffer, int64_t D) {
  if (!e.routed) return x;
  T* out = buffer + e.first * D;
  for (int64_t r = 0; r < e.rows; ++r)
    std::copy_n(x + d.token[static_cast<size_t>(e.first + r)] * D, D, out + r * D);
  return out;
}

// y_t (or dx_t) = its shared row (if any) + its routed rows in slot order.
template <class T>
void sum_rows_per_token(const ExpertDispatch& d, const T* rows, T* out, int64_t K, int64_t D) {
  parallel_for(d.tokens, std::max<int64_t>(1, 4096 / D), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      T* o = out + n * D;
      if (d.shared)
        std::copy_n(rows + (d.routed_rows + n) * D, D, o);
      else
        std::fill_n(o, D, T(0));
      for (int64_t k = 0; k < K; ++k) {
        const T* r = rows + d.row_of_slot[static_cast<size_t>(n * K + k)] * D;
        for (int64_t c = 0; c < D; ++c) o[c] += r[c];
      }
    }
  });
}

// What the backward of the experts op keeps: its inputs (x and the gate weights in slot order), the
// routed rows of x gathered by expert, and each expert's g, u and h = silu(g) * u.
struct ExpertsSaved {
  Tensor x, slot_weights, gathered_x, gate_act, up_act, hidden;
};

template <class T>
Tensor experts_forward(const ExpertDispatch& d, ExpertsSaved& saved) {
  const int64_t D = saved.x.size(1), K = d.tokens > 0 ? d.routed_rows / d.tokens : 0;
  const DType dtype = saved.x.dtype();
  saved.gathered_x = Tensor::empty({d.routed_rows, D}, dtype);
  for (Tensor* t : {&saved.gate_act, &saved.up_act, &saved.hidden}) *t = Tensor::empty({d.activation_size}, dtype);
  const Tensor rows = Tensor::empty({d.rows(), D}, dtype);
  const T *px = saved.x.data<T>(), *pw = saved.slot_weights.data<T>();
  T *pg = saved.gate_act.data<T>(), *pu = saved.up_act.data<T>(), *ph = saved.hidden.data<T>(), *prows = rows.data<T>();
  parallel_tasks(static_cast<int64_t>(d.experts.size()), [&](int64_t i) {
    const ExpertDispatch::Expert& e = d.experts[static_cast<size_t>(i)];
    const T* xe = expert_rows(d, e, px, saved.gathered_x.data<T>(), D);
    T *g = pg + e.activations, *u = pu + e.activations, *h = ph + e.activations, *out = prows + e.first * D;
    gemm_serial<T>(false, true, e.rows, e.width, D, T(1), xe, D, e.gate.data<T>(), D, T(0), g, e.width);
    gemm_serial<T>(false, true, e.rows, e.width, D, T(1), xe, D, e.up.data<T>(), D, T(0), u, e.width);
    swiglu_forward(g, u, h, e.rows * e.width);
    gemm_serial<T>(false, true, e.rows, D, e.width, T(1), h, e.width, e.down.data<T>(), e.width, T(0), out, D);
    if (e.routed)
      for (int64_t r = 0; r < e.rows; ++r) {
        const T w = pw[d.slot[static_cast<size_t>(e.first + r)]];
        for (T *p = out + r * D, *end = p + D; p != end; ++p) *p *= w;
      }
  });
  Tensor y = Tensor::empty({d.tokens, D}, dtype);
  sum_rows_per_token(d, prows, y.data<T>(), K, D);
  return y;
}

// Gradients in the op's input order: x, the [N, K] gate weights, then gate/up/down of each expert.
template <class T>
std::vector<Tensor> experts_backward(const ExpertDispatch& d, const ExpertsSaved& saved, const Tensor& grad,
                                     const std::vector<bool>& needed) {
  const int64_t D = saved.x.size(1), K = d.tokens > 0 ? d.routed_rows / d.tokens : 0;
  const DType dtype = saved.x.dtype();
  const bool need_x = needed[0], need_w = needed[1];
  const Tensor dy = contiguous_copy(grad);
  const Tensor gathered_dy = Tensor::empty({d.routed_rows, D}, dtype);
  const Tensor weighted = Tensor::empty({d.activation_size}, dtype), dhidden = Tensor::empty({d.activation_size}, dtype);
  const Tensor dgate = Tensor::empty({d.activation_size}, dtype), dup = Tensor::empty({d.activation_size}, dtype);
  const Tensor dx_rows = need_x ? Tensor::empty({d.rows(), D}, dtype) : Tensor();
  Tensor dw = need_w ? Tensor::empty({d.tokens, K}, dtype) : Tensor();
  std::vector<Tensor> grads(2 + 3 * d.experts.size());
  for (size_t i = 0; i < d.experts.size(); ++i) {  // shapes are known up front: allocate outside the tasks
    const ExpertDispatch::Expert& e = d.experts[i];
    const Shape shapes[3] = {e.gate.shape(), e.up.shape(), e.down.shape()};
    for (size_t j = 0; j < 3; ++j)
      if (needed[2 + 3 * i + j]) grads[2 + 3 * i + j] = Tensor::empty(shapes[j], dtype);
  }
  const T *px = saved.x.data<T>(), *pw = saved.slot_weights.data<T>(), *pdy = dy.data<T>();
  const T *pg = saved.gate_act.data<T>(), *pu = saved.up_act.data<T>(), *ph = saved.hidden.data<T>();
  T *phw = weighted.data<T>(), *pdh = dhidden.data<T>(), *pdg = dgate.data<T>(), *pdu = dup.data<T>();
  parallel_tasks(static_cast<int64_t>(d.experts.size()), [&](int64_t i) {
    const ExpertDispatch::Expert& e = d.experts[static_cast<size_t>(i)];
    const int64_t n = e.rows, I = e.width, at = e.activations;
    const T* xe = e.routed ? saved.gathered_x.data<T>() + e.first * D : px;
    const T* dye = expert_rows(d, e, pdy, gathered_dy.data<T>(), D);
    const T *g = pg + at, *u = pu + at, *h = ph + at, *hw = h;
    T *dh = pdh + at, *dg = pdg + at, *du = pdu + at;
    gemm_serial<T>(false, false, n, I, D, T(1), dye, D, e.down.data<T>(), I, T(0), dh, I);
    if (e.routed) {
      for (int64_t r = 0; r < n; ++r) {
        const int64_t slot = d.slot[static_cast<size_t>(e.first + r)];
        const T w = pw[slot];
        const T* hr = h + r * I;
        T *hwr = phw + at + r * I, *dhr = dh + r * I;
        if (need_w) {
          double dot = 0;
          for (int64_t c = 0; c < I; ++c) dot += static_cast<double>(dhr[c]) * hr[c];
          dw.data<T>()[slot] = static_cast<T>(dot);
        }
        for (int64_t c = 0; c < I; ++c) hwr[c] = w * hr[c], dhr[c] *= w;
      }
      hw = phw + at;
    }
    const Tensor* expert_grads = grads.data() + 2 + 3 * i;
    if (expert_grads[2].defined()) gemm_serial<T>(true, false, D, I, n, T(1), dye, D, hw, I, T(0), expert_grads[2].data<T>(), I);
    swiglu_backward(g, u, dh, dg, du, n * I);
    if (expert_grads[0].defined()) gemm_serial<T>(true, false, I, D, n, T(1), dg, I, xe, D, T(0), expert_grads[0].data<T>(), D);
    if (expert_grads[1].defined()) gemm_serial<T>(true, false, I, D, n, T(1), du, I, xe, D, T(0), expert_grads[1].data<T>(), D);
    if (need_x) {
      T* dxe = dx_rows.data<T>() + e.first * D;
      gemm_serial<T>(false, false, n, D, I, T(1), dg, I, e.gate.data<T>(), D, T(0), dxe, D);
      gemm_serial<T>(false, false, n, D, I, T(1), du, I, e.up.data<T>(), D, T(1), dxe, D);
    }
  });
  if (need_x) {
    grads[0] = Tensor::empty({d.tokens, D}, dtype);
    sum_rows_per_token(d, dx_rows.data<T>(), grads[0].data<T>(), K, D);
  }
  grads[1] = dw;
  return grads;
}

// y [N, D] = sum over each token's experts of w * expert(x) + shared experts(x), as one graph node.
Tensor experts_op(const Tensor& x, const Tensor& weights, ExpertDispatch dispatch) {
  return dispatch_floating(x.dtype(), "DeepSeekMoE", [&]<class T>() {
    for (const Tensor& w : dispatch.weights)
      if (w.dtype() != x.dtype() || !w.is_contiguous())
        throw Error(std::string("DeepSeekMoE: expert weights must be contiguous ") + dtype_name(x.dtype()) + ", got " +
                    dtype_name(w.dtype()) + " " + shape_str(w.shape()));
    ExpertsSaved saved;
    saved.x = contiguous_copy(x.detach());
    saved.slot_weights = contiguous_copy(weights.detach());
    Tensor y = experts_forward<T>(dispatch, saved);
    std::vector<Tensor> inputs = {x, weights};
    inputs.insert(inputs.end(), dispatch.weights.begin(), dispatch.weights.end());
    std::vector<bool> needed;
    for (const Tensor& t : inputs) needed.push_back(t.requires_grad());
    dispatch.weights.clear();  // the closure keeps the detached copies in experts, not the graph leaves
    return autograd::record("moe_experts", y, inputs,
                            [d = std::move(dispatch), saved = std::move(saved), needed](const Tensor& grad) {
                              return experts_backward<T>(d, saved, grad, needed);
                            });
  });
}

// The same y as experts_op, composed from each expert module's own forward: anomaly mode takes this
// path so that a NaN or Inf is reported inside the expert that made it, forward and backward
// ("model.layers.1.mlp.experts.5.down_proj"), which the fused op, one node for all experts, cannot
// tell. Tokens sum their rows in another order than experts_op: equal up to rounding.
Tensor experts_module_by_module(const nn::ModuleList& experts, const nn::SwiGLU* shared, const Tensor& x,
                                const Tensor& weights, const ExpertDispatch& d, const std::vector<int64_t>& offsets) {
  Tensor y = shared ? shared->forward(x) : zeros(x.shape(), x.dtype());
  const Tensor slot_weights = reshape(weights, {d.routed_rows});
  for (size_t e = 0; e < experts.size(); ++e) {
    const auto first = static_cast<ptrdiff_t>(offsets[e]), last = static_cast<ptrdiff_t>(offsets[e + 1]);
    if (first == last) continue;
    auto rows_of = [&](const std::vector<int64_t>& v) { return from_vector(std::vector<int64_t>(v.begin() + first, v.begin() + last)); };
    const Tensor tokens = rows_of(d.token);
    const Tensor out = experts.at<nn::SwiGLU>(e)->forward(index_select(x, 0, tokens));
    y = index_add(y, 0, tokens, out * unsqueeze(index_select(slot_weights, 0, rows_of(d.slot)), 1));
  }
  return y;
}

}  // namespace

MoEGate::MoEGate(const DeepSeekV3Config& c)
    : n_routed_experts_(c.n_routed_experts),
      top_k_(c.num_experts_per_tok),
      n_group_(c.n_group),
      topk_group_(c.topk_group),
      routed_scaling_factor_(c.routed_scaling_factor),
      norm_topk_prob_(c.norm_topk_prob),
      sigmoid_(c.scoring_func == "sigmoid"),
      topk_method_(c.topk_method) {
  weight = register_parameter("weight", Tensor::empty({c.n_routed_experts, c.hidden_size}));
  nn::init::normal_(weight, 0.0, c.initializer_range);
  if (topk_method_ == "noaux_tc")
    e_score_correction_bias = register_buffer("e_score_correction_bias", zeros({c.n_routed_experts}));
}

MoEGate::Routing MoEGate::route(const Tensor& x) const {
  nn::ForwardScope scope(*this);
  // The router's scores stay float32 under bf16 matmul precision (as DeepSeek-V3 keeps its gating in
  // high precision): bf16 rounding would flip near-tied top-k choices, and a flipped expert changes
  // a token's output by far more than the rounding itself.
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
  const bool grouped = n_group_ > 1 && topk_method_ != "greedy";
  const int64_t per_group = E / n_group_;

  r.expert_ids = Tensor::empty({N, K}, kInt64);
  int64_t* ids = r.expert_ids.data<int64_t>();
  parallel_for(N, 256, [&](int64_t begin, int64_t end) {
    std::vector<double> choice(static_cast<size_t>(E)), group_score(static_cast<size_t>(n_group_)), members;
    std::vector<int64_t> kept_groups, picked;
    std::vector<bool> kept(static_cast<size_t>(n_group_));
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t e = 0; e < E; ++e) choice[static_cast<size_t>(e)] = s[n * E + e] + bias[static_cast<size_t>(e)];
      if (grouped) {
        // V3: a group's score is the sum of its two best biased scores; V2: its best score.
        for (int64_t g = 0; g < n_group_; ++g) {
          members.assign(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
          std::sort(members.begin(), members.end(), std::greater<>());
          group_score[static_cast<size_t>(g)] =
              topk_method_ == "noaux_tc" ? members[0] + (members.size() > 1 ? members[1] : 0.0) : members[0];
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
  nn::ForwardScope scope(*this);
  if (x.dim() != 3) throw Error("DeepSeekMoE: input must be [B, T, hidden], got " + shape_str(x.shape()));
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), N = B * T;
  const Tensor flat = reshape(x, {N, D});
  const MoEGate::Routing routing = gate->route(flat);
  const int64_t K = routing.expert_ids.size(1), E = static_cast<int64_t>(experts->size());

  // Stable counting sort of the N*K (token, slot) assignments by expert: each expert's tokens become
  // one contiguous run of rows, in token order.
  const int64_t* ids = routing.expert_ids.data<int64_t>();
  std::vector<int64_t> loads(static_cast<size_t>(E), 0), offsets(static_cast<size_t>(E + 1), 0);
  for (int64_t i = 0; i < N * K; ++i) ++loads[static_cast<size_t>(ids[i])];
  for (int64_t e = 0; e < E; ++e) offsets[static_cast<size_t>(e + 1)] = offsets[static_cast<size_t>(e)] + loads[static_cast<size_t>(e)];
  ExpertDispatch dispatch;
  dispatch.tokens = N;
  dispatch.routed_rows = N * K;
  dispatch.token.resize(static_cast<size_t>(N * K));
  dispatch.slot.resize(static_cast<size_t>(N * K));
  dispatch.row_of_slot.resize(static_cast<size_t>(N * K));
  std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < N * K; ++i) {
    const int64_t row = cursor[static_cast<size_t>(ids[i])]++;
    dispatch.token[static_cast<size_t>(row)] = i / K;
    dispatch.slot[static_cast<size_t>(row)] = i;
    dispatch.row_of_slot[static_cast<size_t>(i)] = row;
  }
  // The shared experts see every token; they go first, being the largest task.
  if (shared_experts) dispatch.add(*shared_experts, -1, 0, N);
  for (int64_t e = 0; e < E; ++e)  // an idle expert costs nothing (and gets no gradient)
    if (loads[static_cast<size_t>(e)] > 0)
      dispatch.add(*experts->at<nn::SwiGLU>(static_cast<size_t>(e)), e, offsets[static_cast<size_t>(e)], loads[static_cast<size_t>(e)]);
  const Tensor y = autograd::is_anomaly_enabled()
                       ? experts_module_by_module(*experts, shared_experts.get(), flat, routing.weights, dispatch, offsets)
                       : experts_op(flat, routing.weights, std::move(dispatch));

  stats_.expert_ids = routing.expert_ids;
  stats_.loads = from_vector(loads);
  stats_.balance = gate->balance_loss(routing, B, T);
  return reshape(y, {B, T, D});
}

void DeepSeekMoE::update_expert_bias(double gamma) {
  if (!stats_.loads.defined()) throw Error("update_expert_bias: no forward pass has routed tokens yet");
  update_expert_bias(gamma, stats_.loads);
}

void DeepSeekMoE::update_expert_bias(double gamma, const Tensor& loads) {
  Tensor& bias = gate->e_score_correction_bias;
  if (!bias.defined())
    throw Error("update_expert_bias: this MoE layer has no e_score_correction_bias (its topk_method is not noaux_tc)");
  if (loads.shape() != bias.shape())
    throw Error("update_expert_bias: loads " + shape_str(loads.shape()) + " do not match " + shape_str(bias.shape()) + " experts");
  const std::vector<double> c = loads.to(kFloat64).to_vector<double>();
  const double mean_load = std::accumulate(c.begin(), c.end(), 0.0) / static_cast<double>(c.size());
  std::vector<double> b = bias.to(kFloat64).to_vector<double>();
  for (size_t i = 0; i < b.size(); ++i) b[i] += gamma * static_cast<double>((mean_load > c[i]) - (mean_load < c[i]));
  copy_into(bias, from_vector(b, bias.shape()));
}

}  // namespace latent::models

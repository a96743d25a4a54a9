// moe_experts: its checks, the dispatch of (token, slot) assignments by expert, the per-expert task
// forward and backward, and in anomaly mode the per-expert checks that name the expert at fault.
#include "moe_experts.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "../core/bf16_weights.hpp"
#include "../core/gemm.hpp"
#include "../core/gemm_bf16.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "anomaly.hpp"
#include "grad_mode.hpp"
#include "nn_ops.hpp"
#include "node.hpp"

namespace latent {
namespace {

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
// Kept for the backward: g, u and the gathered rows of x (x itself the router keeps anyway). The
// backward computes h again, row by row next to the sigmoid its own SwiGLU step needs: keeping h would
// cost half as much again as g and u (docs/architecture.md, "Memory").
struct ExpertDispatch {
  struct Expert {
    Tensor gate, up, down;  // weights [I, D], [I, D], [D, I], detached
    bool routed;            // false: a shared expert over every token, weight 1
    int64_t first, rows, width, activations;  // its rows, its I, and where its [rows, I] activations start
    int64_t index;                            // its index among the routed experts, -1 for the shared one
    std::string module;                       // its label, else the caller's module (anomaly messages)
    bool labelled;                            // module is the expert's own label: projections get suffixes
    Tensor gate_bf16 = {}, up_bf16 = {}, down_bf16 = {};  // under kBFloat16 (float32): the weights rounded
  };
  int64_t tokens = 0, routed_rows = 0, activation_size = 0;
  bool shared = false;                            // rows [N*K, N*K + N) exist
  bool bf16 = false;                              // products on bfloat16 operands (see round_weights)
  std::vector<int64_t> token, slot, row_of_slot;  // per routed row: token, slot n*K+k; per slot: its row
  std::vector<Expert> experts;                    // only experts with rows
  std::vector<Tensor> weights;                    // gate, up, down of each expert: the op's inputs after x and w

  // With `for_backward`, the expert's matrices are kept detached (the backward's closure must not hold
  // the graph leaves) and listed in `weights`; without, the handles are used as they are.
  void add(const ExpertWeights& w, int64_t expert, int64_t first, int64_t rows, const std::string& caller,
           bool for_backward) {
    const int64_t width = w.gate_proj.size(0);
    auto kept = [&](const Tensor& t) { return for_backward ? t.detach() : t; };
    experts.push_back({kept(w.gate_proj), kept(w.up_proj), kept(w.down_proj), expert >= 0,
                       expert >= 0 ? first : routed_rows + first, rows, width, activation_size, expert,
                       w.label.empty() ? caller : w.label, !w.label.empty()});
    activation_size += rows * width;
    if (for_backward) weights.insert(weights.end(), {w.gate_proj, w.up_proj, w.down_proj});
    shared = shared || expert < 0;
  }
  int64_t rows() const { return routed_rows + (shared ? tokens : 0); }
  // Multiply-adds of the forward's three GEMMs over every expert's rows (the backward's are twice that).
  int64_t work(int64_t D) const {
    int64_t total = 0;
    for (const Expert& e : experts) total += 3 * e.rows * e.width * D;
    return total;
  }
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
// routed rows of x gathered by expert, and each expert's g and u. Under kBFloat16
// the rows are gathered straight into their bfloat16 copy, [rows(), D] in dispatch order (the shared
// expert's rows are x's), which is all the weight gradients read; the float32 gather is then made
// only for anomaly mode's checks.
struct ExpertsSaved {
  Tensor x, slot_weights, gathered_x, gate_act, up_act, rows_bf16;
};

// ---- bfloat16 precision ---------------------------------------------------------------------------
// Under kBFloat16 (float32 only) each GEMM operand is rounded once per op instead of once per product:
// the expert weights once per optimizer step (a leaf goes through core/bf16_weights.hpp, so the
// backward reuses the forward's copy), each activation right after it is computed, and every product
// that reads it runs on that copy (core/gemm_bf16.hpp). The bits are those of rounding per product;
// only the repeated work and the allocations inside the tasks are gone.

void round_weights(ExpertDispatch& d) {
  d.bf16 = true;
  for (size_t i = 0; i < d.experts.size(); ++i) {
    ExpertDispatch::Expert& e = d.experts[i];
    Tensor* copies[3] = {&e.gate_bf16, &e.up_bf16, &e.down_bf16};
    const Tensor* handles[3] = {&e.gate, &e.up, &e.down};
    for (size_t j = 0; j < 3; ++j) {
      // The caller's tensor (a parameter is a leaf): listed in `weights` when recording, else the
      // expert's own handle.
      const Tensor& w = d.weights.empty() ? *handles[j] : d.weights[3 * i + j];
      *copies[j] = w.is_leaf() ? bf16_weight(w) : to_bf16_operand(w);
    }
  }
}

// One GEMM operand of an expert task: the matrix, and its bfloat16 copy when the op runs at bf16.
template <class T>
struct Operand {
  const T* data;
  const bfloat16* rounded;  // null: float32 or float64 product
  int64_t ld;
};

template <class T>
void product(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, Operand<T> A, Operand<T> B, T beta, T* C,
             int64_t ldc) {
  if constexpr (std::is_same_v<T, float>)
    if (A.rounded && K > 0) return gemm_bf16(ta, tb, M, N, K, alpha, A.rounded, A.ld, B.rounded, B.ld, beta, C, ldc);
  gemm_serial<T>(ta, tb, M, N, K, alpha, A.data, A.ld, B.data, B.ld, beta, C, ldc);
}

// Rounds [rows, cols] (leading dimension ld) into dst when dst is given (packed, leading dimension cols).
template <class T>
void round_into(const T* src, int64_t rows, int64_t cols, int64_t ld, bfloat16* dst) {
  if constexpr (std::is_same_v<T, float>)
    if (dst) round_to_bf16(src, rows, cols, ld, dst);
}

const bfloat16* rounded(const Tensor& t) { return t.defined() ? t.data<bfloat16>() : nullptr; }
bfloat16* buffer(const Tensor& t) { return t.defined() ? t.data<bfloat16>() : nullptr; }
template <class T>
T* values(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Elementwise results that products read, in rows of `row` elements: fill(chunks, begin, m) writes
// elements [begin, begin + m) (whole rows) of each of n-element results through chunks[j]. Result j is
// kept in float32 where outputs[j].values is given and rounded into outputs[j].rounded where that is
// given; a result kept only rounded never goes through memory in float32 (each chunk, in L1, is rounded
// as soon as it is written). Chunks hold as many rows as fit kChunk elements: rounding per row (128
// elements in the `small` model) cost a call per row and output, 140,000 calls per bf16 step.
template <class T>
struct Output {
  T* values;
  bfloat16* rounded;
};
template <class T, size_t N, class Fill>
void write_rounded(int64_t n, int64_t row, const std::array<Output<T>, N>& outputs, Fill&& fill) {
  constexpr int64_t kChunk = 2048;  // N = 3 float32 chunks: 24 KB, within L1
  row = std::max<int64_t>(row, 1);
  const int64_t chunk = row > kChunk ? row : kChunk / row * row;
  std::vector<T> spill;  // a row longer than kChunk: the buffers go to the heap
  T stack_buffers[N][kChunk];
  if (row > kChunk) spill.resize(static_cast<size_t>(N * row));
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t m = std::min(chunk, n - begin);
    std::array<T*, N> chunks;
    for (size_t j = 0; j < N; ++j)
      chunks[j] = outputs[j].values ? outputs[j].values + begin : spill.empty() ? stack_buffers[j] : spill.data() + j * row;
    fill(chunks, begin, m);
    for (size_t j = 0; j < N; ++j)
      round_into(chunks[j], 1, m, m, outputs[j].rounded ? outputs[j].rounded + begin : nullptr);
  }
}

// Under bf16, x (or dy), [N, D] contiguous, rounded once before the experts run: into the shared
// expert's rows of `rows` (the op's [rows(), D] bf16 operand rows) when there is one, else into `own`.
// A token's row is read by K routed experts and the shared one; each copies it rounded rather than
// rounding it again. x's producer may have rounded it already (a norm: core/gemm.hpp, rounded_copy).
const bfloat16* round_tokens(const ExpertDispatch& d, const Tensor& x, const Tensor& rows, Tensor& own, int64_t D) {
  const Tensor ready = rounded_view(x);
  if (!d.shared && ready.defined()) return (own = ready).data<bfloat16>();
  if (!d.shared) own = Tensor::empty({d.tokens, D}, kBFloat16);
  const Tensor out = d.shared ? rows.as_strided({d.tokens, D}, {D, 1}, d.routed_rows * D) : own;
  if (ready.defined())
    copy_into(out, ready);
  else
    float_to_bfloat16(x.data<float>(), out.data<bfloat16>(), d.tokens * D);
  return out.data<bfloat16>();
}

// The expert's input rows as expert_rows gives them, and under bf16 their rounded copy in `rounded`,
// [e.rows, D], copied from round_tokens' rows (a shared expert's are those rows already). Under bf16
// with no float32 buffer (anomaly mode off) a routed expert's float32 rows are not gathered at all,
// and null is returned.
template <class T>
const T* expert_operand_rows(const ExpertDispatch& d, const ExpertDispatch::Expert& e, const T* x, T* buffer,
                             const bfloat16* tokens_rounded, bfloat16* rounded, int64_t D) {
  if (rounded && e.routed)
    for (int64_t r = 0; r < e.rows; ++r)
      std::copy_n(tokens_rounded + d.token[static_cast<size_t>(e.first + r)] * D, D, rounded + r * D);
  return buffer || !e.routed ? expert_rows(d, e, x, buffer, D) : nullptr;
}

// ---- anomaly mode: the op checks each expert's parts itself, in dispatch order (shared first) ----

// A [rows, width] block of a flat buffer, for the checks.
Tensor block(const Tensor& flat, int64_t offset, int64_t rows, int64_t width) {
  return flat.as_strided({rows, width}, {width, 1}, offset);
}

std::string of(const ExpertDispatch::Expert& e) {
  return e.index >= 0 ? " of expert " + std::to_string(e.index) : std::string(" of the shared expert");
}

// Where a part ran: "<label>.down_proj" for a projection of a labelled expert, else the label alone.
std::string module_of(const ExpertDispatch::Expert& e, const char* projection = nullptr) {
  return e.labelled && projection ? e.module + "." + projection : e.module;
}

void check_forward_parts(const ExpertDispatch& d, const ExpertsSaved& saved, const Tensor& hidden, const Tensor& rows) {
  const int64_t D = saved.x.size(1);
  for (const ExpertDispatch::Expert& e : d.experts) {
    const Tensor xe = e.routed ? block(saved.gathered_x, e.first * D, e.rows, D) : saved.x;
    const Tensor g = block(saved.gate_act, e.activations, e.rows, e.width);
    const Tensor u = block(saved.up_act, e.activations, e.rows, e.width);
    const Tensor h = block(hidden, e.activations, e.rows, e.width);
    const std::string x_name = "the input rows" + of(e);
    autograd::check_forward_part("moe_experts", {"the gate_proj output" + of(e), g},
                                 {{x_name, xe}, {"the gate_proj weight" + of(e), e.gate}}, module_of(e, "gate_proj"));
    autograd::check_forward_part("moe_experts", {"the up_proj output" + of(e), u},
                                 {{x_name, xe}, {"the up_proj weight" + of(e), e.up}}, module_of(e, "up_proj"));
    autograd::check_forward_part("moe_experts", {"the SwiGLU product" + of(e), h},
                                 {{"the gate_proj output" + of(e), g}, {"the up_proj output" + of(e), u}}, module_of(e));
    autograd::check_forward_part("moe_experts", {"the down_proj output" + of(e), block(rows, e.first * D, e.rows, D)},
                                 {{"the SwiGLU product" + of(e), h}, {"the down_proj weight" + of(e), e.down}},
                                 module_of(e, "down_proj"));
  }
}

template <class T>
Tensor experts_forward(const ExpertDispatch& d, ExpertsSaved& saved) {
  const int64_t D = saved.x.size(1), K = d.tokens > 0 ? d.routed_rows / d.tokens : 0;
  const DType dtype = saved.x.dtype();
  if (!d.bf16 || autograd::is_anomaly_enabled()) saved.gathered_x = Tensor::empty({d.routed_rows, D}, dtype);
  for (Tensor* t : {&saved.gate_act, &saved.up_act}) *t = Tensor::empty({d.activation_size}, dtype);
  const Tensor rows = Tensor::empty({d.rows(), D}, dtype);
  // bf16: the input rows (kept for the backward) and h (the down projection's operand), rounded; h in
  // float32 is then only written for anomaly mode's checks.
  if (d.bf16) saved.rows_bf16 = Tensor::empty({d.rows(), D}, kBFloat16);
  const Tensor hidden_bf16 = d.bf16 ? Tensor::empty({d.activation_size}, kBFloat16) : Tensor();
  const Tensor hidden = !d.bf16 || autograd::is_anomaly_enabled() ? Tensor::empty({d.activation_size}, dtype) : Tensor();
  const T *px = saved.x.data<T>(), *pw = saved.slot_weights.data<T>();
  T *pg = saved.gate_act.data<T>(), *pu = saved.up_act.data<T>(), *ph = values<T>(hidden), *prows = rows.data<T>();
  bfloat16 *pxb = buffer(saved.rows_bf16), *phb = buffer(hidden_bf16);
  Tensor x_rounded;
  const bfloat16* pxt = nullptr;
  if constexpr (std::is_same_v<T, float>)
    if (d.bf16) pxt = round_tokens(d, saved.x, saved.rows_bf16, x_rounded, D);
  parallel_tasks(static_cast<int64_t>(d.experts.size()), d.work(D), [&](int64_t i) {
    const ExpertDispatch::Expert& e = d.experts[static_cast<size_t>(i)];
    T *g = pg + e.activations, *u = pu + e.activations, *h = ph ? ph + e.activations : nullptr;
    T* out = prows + e.first * D;
    bfloat16 *xb = pxb ? pxb + e.first * D : nullptr, *hb = phb ? phb + e.activations : nullptr;
    T* gathered = saved.gathered_x.defined() ? saved.gathered_x.data<T>() : nullptr;
    const T* xe = expert_operand_rows(d, e, px, gathered, pxt, xb, D);
    const Operand<T> x_rows{xe, xb, D};
    product<T>(false, true, e.rows, e.width, D, T(1), x_rows, {e.gate.data<T>(), rounded(e.gate_bf16), D}, T(0), g, e.width);
    product<T>(false, true, e.rows, e.width, D, T(1), x_rows, {e.up.data<T>(), rounded(e.up_bf16), D}, T(0), u, e.width);
    write_rounded<T, 1>(e.rows * e.width, 1, {{{h, hb}}}, [&](const std::array<T*, 1>& out, int64_t begin, int64_t m) {
      swiglu_forward(g + begin, u + begin, out[0], m);
    });
    product<T>(false, true, e.rows, D, e.width, T(1), {h, hb, e.width}, {e.down.data<T>(), rounded(e.down_bf16), e.width},
               T(0), out, D);
    if (e.routed)
      for (int64_t r = 0; r < e.rows; ++r) {
        const T w = pw[d.slot[static_cast<size_t>(e.first + r)]];
        for (T *p = out + r * D, *end = p + D; p != end; ++p) *p *= w;
      }
  });
  if (autograd::is_anomaly_enabled()) [[unlikely]]
    check_forward_parts(d, saved, hidden, rows);
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
  // Under bf16 the products read dy's rows rounded, copied from dy rounded once (see expert_operand_rows).
  const bool gather_dy = !d.bf16 || autograd::is_anomaly_enabled();
  const Tensor gathered_dy = gather_dy ? Tensor::empty({d.routed_rows, D}, dtype) : Tensor();
  // dh' = dy Wd, the gradient of h before the gate weight scales it: what anomaly mode checks as the
  // down projection's input gradient (the gate weights themselves are checked in the forward).
  const Tensor dhidden = Tensor::empty({d.activation_size}, dtype);
  // bf16: dy's rows, w h, dg and du rounded, the products' operands; the float32 values of the last
  // three are then never stored (write_rounded), except dg and du for anomaly mode's checks.
  const bool keep_float = !d.bf16 || autograd::is_anomaly_enabled();
  Tensor weighted, dgate, dup;  // w h, dg, du
  if (!d.bf16) weighted = Tensor::empty({d.activation_size}, dtype);
  if (keep_float)
    for (Tensor* t : {&dgate, &dup}) *t = Tensor::empty({d.activation_size}, dtype);
  const Tensor dx_rows = need_x ? Tensor::empty({d.rows(), D}, dtype) : Tensor();
  const Tensor dy_bf16 = d.bf16 ? Tensor::empty({d.rows(), D}, kBFloat16) : Tensor();
  Tensor weighted_bf16, dgate_bf16, dup_bf16;
  if (d.bf16)
    for (Tensor* t : {&weighted_bf16, &dgate_bf16, &dup_bf16}) *t = Tensor::empty({d.activation_size}, kBFloat16);
  Tensor dw = need_w ? Tensor::empty({d.tokens, K}, dtype) : Tensor();
  std::vector<Tensor> grads(2 + 3 * d.experts.size());
  for (size_t i = 0; i < d.experts.size(); ++i) {  // shapes are known up front: allocate outside the tasks
    const ExpertDispatch::Expert& e = d.experts[i];
    const Shape shapes[3] = {e.gate.shape(), e.up.shape(), e.down.shape()};
    for (size_t j = 0; j < 3; ++j)
      if (needed[2 + 3 * i + j]) grads[2 + 3 * i + j] = Tensor::empty(shapes[j], dtype);
  }
  const T *px = saved.x.data<T>(), *pw = saved.slot_weights.data<T>(), *pdy = dy.data<T>();
  const T *pg = saved.gate_act.data<T>(), *pu = saved.up_act.data<T>();
  T *phw = values<T>(weighted), *pdh = dhidden.data<T>(), *pdg = values<T>(dgate), *pdu = values<T>(dup);
  const bfloat16* pxb = rounded(saved.rows_bf16);
  bfloat16 *pdyb = buffer(dy_bf16), *phwb = buffer(weighted_bf16), *pdgb = buffer(dgate_bf16), *pdub = buffer(dup_bf16);
  Tensor dy_rounded;
  const bfloat16* pdyt = nullptr;
  if constexpr (std::is_same_v<T, float>)
    if (d.bf16) pdyt = round_tokens(d, dy, dy_bf16, dy_rounded, D);
  parallel_tasks(static_cast<int64_t>(d.experts.size()), 2 * d.work(D), [&](int64_t i) {
    const ExpertDispatch::Expert& e = d.experts[static_cast<size_t>(i)];
    const int64_t n = e.rows, I = e.width, at = e.activations;
    const T* xe = !e.routed ? px : saved.gathered_x.defined() ? saved.gathered_x.data<T>() + e.first * D : nullptr;
    bfloat16* dyb = pdyb ? pdyb + e.first * D : nullptr;
    const T* dye = expert_operand_rows(d, e, pdy, gathered_dy.defined() ? gathered_dy.data<T>() : nullptr, pdyt, dyb, D);
    const T *g = pg + at, *u = pu + at;
    T *dh = pdh + at, *dg = pdg ? pdg + at : nullptr, *du = pdu ? pdu + at : nullptr;
    T* hw = phw ? phw + at : nullptr;
    bfloat16 *hwb = phwb ? phwb + at : nullptr, *dgb = pdgb ? pdgb + at : nullptr, *dub = pdub ? pdub + at : nullptr;
    const Operand<T> dy_rows{dye, dyb, D}, x_rows{xe, pxb ? pxb + e.first * D : nullptr, D};
    product<T>(false, false, n, I, D, T(1), dy_rows, {e.down.data<T>(), rounded(e.down_bf16), I}, T(0), dh, I);
    // Row by row, while its g, u and dh' are in L1: (dg, du) from dh = w dh', h again from the same
    // sigmoid, dw_r = dh'.h and w h.
    const std::array<Output<T>, 3> outputs = {{{dg, dgb}, {du, dub}, {hw, hwb}}};
    write_rounded<T, 3>(n * I, I, outputs, [&](const std::array<T*, 3>& out, int64_t begin, int64_t m) {
      for (int64_t r = begin / I, c0 = 0; c0 < m; ++r, c0 += I) {
        const int64_t slot = e.routed ? d.slot[static_cast<size_t>(e.first + r)] : -1;
        const T w = e.routed ? pw[slot] : T(1);
        const T *gr = g + r * I, *ur = u + r * I, *dhr = dh + r * I;
        T *dgr = out[0] + c0, *dur = out[1] + c0, *hwr = out[2] + c0;
        swiglu_backward(gr, ur, dhr, w, dgr, dur, hwr, I);
        if (!e.routed) continue;  // the shared expert: w = 1, and no gate weight to differentiate
        if (need_w) {
          double dot = 0;
          for (int64_t c = 0; c < I; ++c) dot += static_cast<double>(dhr[c]) * hwr[c];
          dw.data<T>()[slot] = static_cast<T>(dot);
        }
        for (int64_t c = 0; c < I; ++c) hwr[c] *= w;
      }
    });
    const Tensor* expert_grads = grads.data() + 2 + 3 * i;
    if (expert_grads[2].defined())
      product<T>(true, false, D, I, n, T(1), dy_rows, {hw, hwb, I}, T(0), expert_grads[2].data<T>(), I);
    const Operand<T> dg_rows{dg, dgb, I}, du_rows{du, dub, I};
    if (expert_grads[0].defined()) product<T>(true, false, I, D, n, T(1), dg_rows, x_rows, T(0), expert_grads[0].data<T>(), D);
    if (expert_grads[1].defined()) product<T>(true, false, I, D, n, T(1), du_rows, x_rows, T(0), expert_grads[1].data<T>(), D);
    if (need_x) {
      T* dxe = dx_rows.data<T>() + e.first * D;
      product<T>(false, false, n, D, I, T(1), dg_rows, {e.gate.data<T>(), rounded(e.gate_bf16), D}, T(0), dxe, D);
      product<T>(false, false, n, D, I, T(1), du_rows, {e.up.data<T>(), rounded(e.up_bf16), D}, T(1), dxe, D);
    }
  });
  if (autograd::is_anomaly_enabled()) [[unlikely]]
    for (size_t i = 0; i < d.experts.size(); ++i) {
      const ExpertDispatch::Expert& e = d.experts[i];
      const Tensor received = e.routed ? block(gathered_dy, e.first * D, e.rows, D) : dy;
      const auto check = [&](const std::string& what, const Tensor& grad, const std::string& module) {
        if (grad.defined()) autograd::check_backward_part("moe_experts", {what + of(e), grad}, received, module);
      };
      check("the down_proj input", block(dhidden, e.activations, e.rows, e.width), module_of(e, "down_proj"));
      check("the down_proj weight", grads[2 + 3 * i + 2], module_of(e, "down_proj"));
      check("the gate_proj output", block(dgate, e.activations, e.rows, e.width), module_of(e));
      check("the up_proj output", block(dup, e.activations, e.rows, e.width), module_of(e));
      check("the gate_proj weight", grads[2 + 3 * i], module_of(e, "gate_proj"));
      check("the up_proj weight", grads[2 + 3 * i + 1], module_of(e, "up_proj"));
      if (need_x) check("the input rows", block(dx_rows, e.first * D, e.rows, D), module_of(e));
    }
  if (need_x) {
    grads[0] = Tensor::empty({d.tokens, D}, dtype);
    sum_rows_per_token(d, dx_rows.data<T>(), grads[0].data<T>(), K, D);
  }
  grads[1] = dw;
  return grads;
}

// `expert`: the routed expert's index, -1 for the shared expert.
void check_expert(const ExpertWeights& w, int64_t expert, const Tensor& x) {
  const int64_t D = x.size(1), I = w.gate_proj.defined() ? w.gate_proj.size(0) : -1;
  for (const Tensor* t : {&w.gate_proj, &w.up_proj, &w.down_proj}) {
    const bool fits = t->defined() && t->dim() == 2 && t->dtype() == x.dtype() && t->is_contiguous() &&
                      (t == &w.down_proj ? t->size(0) == D && t->size(1) == I : t->size(0) == I && t->size(1) == D);
    if (!fits)
      fail("moe_experts: {} needs contiguous {} gate_proj, up_proj [I, {}] and down_proj [{}, I] for x {}, "
           "got {}{}, {}, {}",
           expert >= 0 ? "expert " + std::to_string(expert) : std::string("the shared expert"), dtype_name(x.dtype()),
           D, D, shape_str(x.shape()),
           w.gate_proj.defined() ? dtype_name(w.gate_proj.dtype()) + std::string(" ") : std::string(),
           w.gate_proj.defined() ? shape_str(w.gate_proj.shape()) : std::string("none"),
           w.up_proj.defined() ? shape_str(w.up_proj.shape()) : std::string("none"),
           w.down_proj.defined() ? shape_str(w.down_proj.shape()) : std::string("none"));
  }
}

void check_inputs(const Tensor& x, const Tensor& weights, const Tensor& expert_ids,
                  const std::vector<ExpertWeights>& experts, const ExpertWeights& shared) {
  if (x.dim() != 2 || x.size(1) == 0 || !is_floating(x.dtype()))
    fail("moe_experts: x must be a floating-point [N, D] tensor with D > 0, got {} {}", dtype_name(x.dtype()),
         shape_str(x.shape()));
  if (expert_ids.dtype() != kInt64 || expert_ids.dim() != 2 || expert_ids.size(0) != x.size(0))
    fail("moe_experts: expert_ids must be Int64 [N, K] with N = {}, got {} {}", x.size(0),
         dtype_name(expert_ids.dtype()), shape_str(expert_ids.shape()));
  if (weights.dtype() != x.dtype() || weights.shape() != expert_ids.shape())
    fail("moe_experts: weights must be {} {} like expert_ids, got {} {}", dtype_name(x.dtype()),
         shape_str(expert_ids.shape()), dtype_name(weights.dtype()), shape_str(weights.shape()));
  for (size_t e = 0; e < experts.size(); ++e) check_expert(experts[e], static_cast<int64_t>(e), x);
  if (shared.gate_proj.defined()) check_expert(shared, -1, x);
}

// Stable counting sort of the N*K (token, slot) assignments by expert: each expert's tokens become one
// contiguous run of rows, in token order. The shared expert sees every token; it goes first, being
// the largest task.
ExpertDispatch dispatch_by_expert(const Tensor& expert_ids, const std::vector<ExpertWeights>& experts,
                                  const ExpertWeights& shared, bool for_backward) {
  const Tensor id_values = expert_ids.contiguous();
  const int64_t N = expert_ids.size(0), K = expert_ids.size(1), E = static_cast<int64_t>(experts.size());
  const int64_t* ids = id_values.data<int64_t>();
  std::vector<int64_t> loads(static_cast<size_t>(E), 0), offsets(static_cast<size_t>(E + 1), 0);
  for (int64_t i = 0; i < N * K; ++i) {
    if (ids[i] < 0 || ids[i] >= E)
      fail("moe_experts: expert id {} at {} out of range [0, {})", ids[i], index_str(i, expert_ids.shape()), E);
    ++loads[static_cast<size_t>(ids[i])];
  }
  for (int64_t e = 0; e < E; ++e) offsets[static_cast<size_t>(e + 1)] = offsets[static_cast<size_t>(e)] + loads[static_cast<size_t>(e)];
  ExpertDispatch d;
  d.tokens = N;
  d.routed_rows = N * K;
  d.token.resize(static_cast<size_t>(N * K));
  d.slot.resize(static_cast<size_t>(N * K));
  d.row_of_slot.resize(static_cast<size_t>(N * K));
  std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < N * K; ++i) {
    const int64_t row = cursor[static_cast<size_t>(ids[i])]++;
    d.token[static_cast<size_t>(row)] = i / K;
    d.slot[static_cast<size_t>(row)] = i;
    d.row_of_slot[static_cast<size_t>(i)] = row;
  }
  const std::shared_ptr<const std::string> caller = autograd::current_module_label();
  const std::string caller_module = caller ? *caller : std::string();
  if (shared.gate_proj.defined()) d.add(shared, -1, 0, N, caller_module, for_backward);
  for (int64_t e = 0; e < E; ++e)  // an idle expert costs nothing (and gets no gradient)
    if (loads[static_cast<size_t>(e)] > 0)
      d.add(experts[static_cast<size_t>(e)], e, offsets[static_cast<size_t>(e)], loads[static_cast<size_t>(e)],
            caller_module, for_backward);
  return d;
}

// Whether the op records a node or checks its parts (anomaly mode); only then does it keep anything
// for a backward.
bool will_record(const Tensor& x, const Tensor& weights, const std::vector<ExpertWeights>& experts,
                 const ExpertWeights& shared) {
  if (autograd::is_anomaly_enabled()) return true;
  if (!GradMode::is_enabled()) return false;
  auto any = [](const ExpertWeights& w) {
    return w.gate_proj.requires_grad() || w.up_proj.requires_grad() || w.down_proj.requires_grad();
  };
  return x.requires_grad() || weights.requires_grad() || (shared.gate_proj.defined() && any(shared)) ||
         std::any_of(experts.begin(), experts.end(), any);
}

}  // namespace

Tensor moe_experts(const Tensor& x, const Tensor& weights, const Tensor& expert_ids,
                   const std::vector<ExpertWeights>& experts, const ExpertWeights& shared) {
  check_inputs(x, weights, expert_ids, experts, shared);
  const bool recording = will_record(x, weights, experts, shared);
  ExpertDispatch dispatch = dispatch_by_expert(expert_ids, experts, shared, recording);
  if (x.dtype() == kFloat32 && get_matmul_precision() == MatmulPrecision::kBFloat16) round_weights(dispatch);
  return dispatch_floating(x.dtype(), "moe_experts", [&]<class T>() {
    ExpertsSaved saved;
    saved.x = contiguous_copy(recording ? x.detach() : x);
    saved.slot_weights = contiguous_copy(recording ? weights.detach() : weights);
    Tensor y = experts_forward<T>(dispatch, saved);
    if (!recording) return y;
    std::vector<Tensor> inputs = {x, weights};
    inputs.insert(inputs.end(), dispatch.weights.begin(), dispatch.weights.end());
    std::vector<bool> needed;
    for (const Tensor& t : inputs) needed.push_back(t.requires_grad());
    dispatch.weights.clear();  // the closure keeps the detached copies in experts, not the graph leaves
    // x and the slot weights are saved as copies; the expert matrices are read in place, so their
    // versions are checked before backward.
    const std::vector<Tensor> expert_matrices(inputs.begin() + 2, inputs.end());
    return autograd::record("moe_experts", y, inputs, expert_matrices,
                            [d = std::move(dispatch), saved = std::move(saved), needed](const Tensor& grad) {
                              return experts_backward<T>(d, saved, grad, needed);
                            });
  });
}

}  // namespace latent

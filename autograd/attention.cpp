// Tiled scaled dot-product attention: a FlashAttention-style forward (online softmax over key blocks)
// and a backward that recomputes each block of attention weights from the saved row logsumexp, both
// built from BLAS products. Every task owns its output rows and runs its blocks in a fixed order, so
// results are bitwise identical for any thread count.
#include "attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/gemm.hpp"
#include "../core/gemm_bf16_small.hpp"
#include "../core/matmul_precision.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "fast_math.hpp"
#include "node.hpp"

namespace latent {
namespace {

// Keys per block: a [rows, 64] panel of scores per block of keys.
constexpr int64_t kKeyBlock = 64;
// The forward's blocks of keys hold up to this many scores: 64 keys for panels of 64 rows or more,
// longer blocks for short panels (decoding, short chunks after a long cache), so that their two
// products per block stay large enough for BLAS to run well.
constexpr int64_t kScoresPerBlock = kKeyBlock * kKeyBlock;
// The forward holds the scores of several blocks of keys at once (a span), up to this many per task
// (256 KB of float32, within L2), so that each row's softmax pass (max, exp, sum, rescaling its
// output) runs once per span rather than once per block: at T = 256 a span is every key.
constexpr int64_t kScoresPerSpan = 1 << 16;

struct Geometry {
  int64_t B, H, Hkv, T, S, Dqk, Dv;
  bool causal;
  double scale;

  int64_t group() const { return H / Hkv; }  // query heads per kv head
  // How many keys of the block [j0, j0 + nk) query row i sees: causal rows see keys j <= i + S - T.
  int64_t visible(int64_t i, int64_t j0, int64_t nk) const {
    return causal ? std::clamp<int64_t>(i + (S - T) - j0 + 1, 0, nk) : nk;
  }
  // The first query row that sees key j.
  int64_t first_row_seeing(int64_t j) const { return causal ? std::max<int64_t>(0, j - (S - T)) : 0; }
};

// A [B, heads, rows, D] tensor as one BLAS matrix per head: head (b, h) starts at at(b, h), its rows
// are ld elements apart and its last dim is contiguous.
template <class T>
struct Heads {
  T* data;
  int64_t batch_stride, head_stride, ld;
  T* at(int64_t b, int64_t h) const { return data + b * batch_stride + h * head_stride; }
};

template <class T>
Heads<T> heads_of(const Tensor& t) {
  return {t.data<std::remove_const_t<T>>(), t.stride(0), t.stride(1),
          t.size(2) > 1 ? t.stride(2) : std::max<int64_t>(1, t.size(3))};
}

// t itself when BLAS can read every head as a row-major matrix in place, else a contiguous copy.
Tensor blas_ready(const Tensor& t) {
  const bool columns = t.stride(3) == 1 || t.size(3) == 1;
  const bool rows = t.size(2) <= 1 || t.stride(2) >= t.size(3);
  return columns && rows && t.stride(0) >= 0 && t.stride(1) >= 0 ? t : contiguous_copy(t);
}

// Heads interleaved within each position, as in permute(x[B, L, N, D], {0, 2, 1, 3}).
bool is_sequence_major(const Tensor& t) { return t.stride(1) < t.stride(2); }

// A new [B, N, L, D] tensor, stored as [B, L, N, D] when sequence_major (then permuting it back to
// [B, L, N, D] and merging the last two dims are free).
Tensor empty_heads(int64_t B, int64_t N, int64_t L, int64_t D, bool sequence_major, DType dtype) {
  if (!sequence_major) return Tensor::empty({B, N, L, D}, dtype);
  return Tensor::empty({B, L, N, D}, dtype).as_strided({B, N, L, D}, {L * N * D, D, N * D, 1}, 0);
}

using fast_math::exp_nonpositive;
using fast_math::lane_max;
using fast_math::lane_sum;

// ---- bfloat16 precision ---------------------------------------------------------------------------
// Under kBFloat16 (float32 only) every product rounds its operands, so the op rounds q, k, v (and, in the
// backward, dO) once, each as one flat array, and keeps the rounded copies for the backward at half the
// size. Rounding each task's strided head rows one by one (48 or 32 elements each in the `small` model)
// cost more per row than the rounding itself: 5.8 % of a one-thread bf16 training step (perf). Each
// block of scores is rounded once for the products that read it. The bits are those of rounding per
// product.

bool bf16_attention(DType dtype) {
  return dtype == kFloat32 && get_matmul_precision() == MatmulPrecision::kBFloat16;
}

// One operand of a block product: float32/float64 rows, or their rounded copy under kBFloat16.
template <class T>
struct Operand {
  const T* data = nullptr;  // null when only the rounded rows exist
  int64_t ld = 0;
  const bfloat16* rounded = nullptr;  // null: a float32/float64 product
  int64_t rounded_ld = 0;
  Operand from_row(int64_t r) const {
    return {data ? data + r * ld : nullptr, ld, rounded ? rounded + r * rounded_ld : nullptr, rounded_ld};
  }
};

// Head (b, h) of a [B, heads, rows, D] operand as a matrix whose rows are ld apart: a head's positions,
// or with heads_as_rows, position 0 of consecutive heads. A bfloat16 t is the rounded copy of q, k, v or dO.
template <class T>
Operand<T> head_operand(const Tensor& t, int64_t b, int64_t h, bool heads_as_rows = false) {
  const int64_t ld = heads_as_rows ? t.stride(1) : t.size(2) > 1 ? t.stride(2) : std::max<int64_t>(1, t.size(3));
  const int64_t offset = b * t.stride(0) + h * t.stride(1);
  if (t.dtype() == kBFloat16) return {nullptr, 0, t.data<bfloat16>() + offset, ld};
  return {t.data<T>() + offset, ld};
}

// A task's [rows, cols] block of scores, rows ld apart; under bf16 also rounded into `copy` (resized
// to fit, packed).
template <class T>
Operand<T> block_operand(const T* data, int64_t rows, int64_t cols, int64_t ld, bool bf16,
                         std::vector<bfloat16>& copy) {
  Operand<T> m{data, ld};
  if constexpr (std::is_same_v<T, float>)
    if (bf16) {
      copy.resize(static_cast<size_t>(rows * cols));
      round_to_bf16(data, rows, cols, ld, copy.data());
      m.rounded = copy.data(), m.rounded_ld = cols;
    }
  return m;
}

template <class T>
void block_product(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const Operand<T>& A, const Operand<T>& B,
                   T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same_v<T, float>)
    if (A.rounded)
      return gemm_bf16_small(ta, tb, M, N, K, alpha, A.rounded, A.rounded_ld, B.rounded, B.rounded_ld, beta, C, ldc);
  gemm<T>(ta, tb, M, N, K, alpha, A.data, A.ld, B.data, B.ld, beta, C, ldc);
}

// x[c] = exp(x[c] - shift) for c < n.
template <class T>
void exp_shifted(T* x, int64_t n, T shift) {
  for (int64_t c = 0; c < n; ++c) x[c] = exp_nonpositive(x[c] - shift);
}

// Both passes run one task per (batch, head) (the forward, for one query position, one per kv group;
// see below) and walk the keys in blocks of kKeyBlock (longer in the forward of short panels); each
// block is multiplied against every query row that sees any of it at once (all rows from the block's
// first viewer on, when causal), so the products are tall [rows, 64] panels rather than 64 x 64
// tiles: fewer BLAS calls and better kernel efficiency at the same arithmetic.

// ---- forward ---------------------------------------------------------------------------------
// For each span of keys (whole blocks, as many as kScoresPerSpan holds), with s = q k^T * scale over
// the rows that see it, computed block by block (online softmax per row, one pass per span):
//   m' = max(m, rowmax(s)),  p = exp(s - m'),  l' = l exp(m - m') + rowsum(p),  o' = o exp(m - m') + p v
// and at the end o /= l and lse = m + log(l), the logsumexp the backward recomputes p from.
//
// A task owns a panel of query rows that read the same kv head: one head's T positions, or, with one
// query position (decoding), all the query heads of a kv group as rows, so that a shared kv head
// (grouped-query attention, MLA's absorbed cache) is read once per group instead of once per head.
// q, k, v are float32/float64, or under kBFloat16 their rounded copies; out and lse are float32/float64.
// out_rounded, when given, is out's rounded copy (core/gemm.hpp, rounded_copy): each task rounds its
// rows when they are final, for the output projection that reads them.
template <class T>
void attention_forward(const Geometry& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                       const Tensor& lse, bfloat16* out_rounded) {
  const Heads<T> O = heads_of<T>(out);
  T* lse_data = lse.data<T>();
  const bool bf16 = q.dtype() == kBFloat16;
  const bool heads_as_rows = g.T == 1 && g.group() > 1 && q.stride(1) >= g.Dqk && O.head_stride >= g.Dv;
  const int64_t rows = heads_as_rows ? g.group() : g.T, heads_per_task = heads_as_rows ? g.group() : 1;
  const int64_t o_ld = heads_as_rows ? O.head_stride : O.ld;
  parallel_tasks(g.B * g.H / heads_per_task, [&](int64_t task) {
    const int64_t h = task * heads_per_task % g.H, b = task * heads_per_task / g.H, kv_head = h / g.group();
    T* o_rows = O.at(b, h);
    // Row r is query position r of head h, or (heads as rows) position 0 of head h + r: either way
    // its logsumexp goes to lse[b, h, 0] + r.
    auto position = [&](int64_t r) { return heads_as_rows ? 0 : r; };
    const int64_t key_block = std::max(kKeyBlock, kScoresPerBlock / std::max<int64_t>(rows, 1));
    const int64_t span = std::max<int64_t>(1, kScoresPerSpan / (std::max<int64_t>(rows, 1) * key_block)) * key_block;
    std::vector<T> scores(static_cast<size_t>(rows * std::min(span, g.S)));
    std::vector<bfloat16> score_copy;
    const Operand<T> q_m = head_operand<T>(q, b, h, heads_as_rows), k_m = head_operand<T>(k, b, kv_head),
                     v_m = head_operand<T>(v, b, kv_head);
    std::vector<T> row_max(static_cast<size_t>(rows), -std::numeric_limits<T>::infinity()),
        row_sum(static_cast<size_t>(rows), T(0));
    // The first row that sees key j (all rows, heads as rows).
    auto first_row = [&](int64_t j) { return heads_as_rows ? 0 : g.first_row_seeing(j); };
    // fn(j0, nk, r0) for each block [j0, j0 + nk) of the span [s0, s0 + ns) that a row sees, r0 the first.
    auto for_each_block = [&](int64_t s0, int64_t ns, auto&& fn) {
      for (int64_t j0 = s0; j0 < s0 + ns && first_row(j0) < rows; j0 += key_block)
        fn(j0, std::min(key_block, s0 + ns - j0), first_row(j0));
    };
    for (int64_t r = 0; r < rows; ++r) std::fill_n(o_rows + r * o_ld, g.Dv, T(0));
    for (int64_t s0 = 0; s0 < g.S && first_row(s0) < rows; s0 += span) {
      const int64_t ns = std::min(span, g.S - s0);  // row r's scores: scores[r * ns, (r + 1) * ns)
      for_each_block(s0, ns, [&](int64_t j0, int64_t nk, int64_t r0) {
        block_product<T>(false, true, rows - r0, nk, g.Dqk, T(g.scale), q_m.from_row(r0), k_m.from_row(j0), T(0),
                         scores.data() + r0 * ns + (j0 - s0), ns);
      });
      for (int64_t r = first_row(s0); r < rows; ++r) {
        const int64_t n = g.visible(position(r), s0, ns);  // n >= 1: the row sees key s0
        T* s = scores.data() + r * ns;
        // Masked keys get weight 0 up to the end of the row's last block (later blocks skip the row).
        std::fill(s + n, s + std::min(ns, (n + key_block - 1) / key_block * key_block), T(0));
        const T m = std::max(row_max[r], lane_max(s, n));
        const T correction = std::exp(row_max[r] - m);  // 0 on the row's first span, where row_max is -inf
        exp_shifted(s, n, m);
        row_sum[r] = row_sum[r] * correction + lane_sum(s, n);
        row_max[r] = m;
        if (correction != T(1))
          for (T *o = o_rows + r * o_ld, *end = o + g.Dv; o != end; ++o) *o *= correction;
      }
      for_each_block(s0, ns, [&](int64_t j0, int64_t nk, int64_t r0) {
        const Operand<T> p_m = block_operand(scores.data() + r0 * ns + (j0 - s0), rows - r0, nk, ns, bf16, score_copy);
        block_product<T>(false, false, rows - r0, g.Dv, nk, T(1), p_m, v_m.from_row(j0), T(1), o_rows + r0 * o_ld,
                         o_ld);
      });
    }
    // Every row sees key 0 (S >= T when causal), so row_sum >= 1.
    for (int64_t r = 0; r < rows; ++r) {
      const T inverse = T(1) / row_sum[r];
      for (T *o = o_rows + r * o_ld, *end = o + g.Dv; o != end; ++o) *o *= inverse;
      lse_data[(b * g.H + h) * g.T + r] = row_max[r] + std::log(row_sum[r]);
    }
    if constexpr (std::is_same_v<T, float>)
      if (out_rounded) float_to_bfloat16_rows_here(o_rows, rows, g.Dv, o_ld, out_rounded + (o_rows - O.data), o_ld);
  });
}

// ---- backward --------------------------------------------------------------------------------
// For each key block j, over the rows i that see it, with p recomputed from the saved logsumexp:
//   p = exp(q k_j^T * scale - lse),  dv_j = p^T do,  dp = do v_j^T,  ds = p * (dp - delta),
//   dq += scale * ds k_j,  dk_j = scale * ds^T q,   with delta_i = sum_d do[i, d] * o[i, d]
// (the softmax backward's row term: sum_j p_ij dp_ij = do_i . o_i). dk_j and dv_j are complete after
// their block, and the first block is seen by every row, so nothing needs zeroing beforehand.
// dk and dv go to `dk_heads`, `dv_heads`: per query head, summed over a kv group afterwards.
// q, k, v and dout_operand are float32/float64, or under kBFloat16 the rounded copies of q, k, v, dout.
template <class T>
void attention_backward(const Geometry& g, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, const Tensor& dout_operand, const Tensor& dq,
                        const Tensor& dk_heads, const Tensor& dv_heads) {
  const Heads<const T> O = heads_of<const T>(out), dO = heads_of<const T>(dout);
  const T* lse_data = lse.data<T>();
  const bool need_dq = dq.defined(), need_dk = dk_heads.defined(), need_dv = dv_heads.defined();
  const Heads<T> dQ = need_dq ? heads_of<T>(dq) : Heads<T>{}, dK = need_dk ? heads_of<T>(dk_heads) : Heads<T>{},
                 dV = need_dv ? heads_of<T>(dv_heads) : Heads<T>{};
  const T scale = T(g.scale);
  const bool bf16 = q.dtype() == kBFloat16;
  parallel_tasks(g.B * g.H, [&](int64_t task) {
    const int64_t h = task % g.H, b = task / g.H, kv_head = h / g.group();
    const T* do_h = dO.at(b, h);
    const T* lse_h = lse_data + (b * g.H + h) * g.T;
    T* dq_h = need_dq ? dQ.at(b, h) : nullptr;
    T* dk_h = need_dk ? dK.at(b, h) : nullptr;
    T* dv_h = need_dv ? dV.at(b, h) : nullptr;
    if (g.T == 0) {  // no query: the keys and values get zero gradients
      for (int64_t j = 0; need_dk && j < g.S; ++j) std::fill_n(dk_h + j * dK.ld, g.Dqk, T(0));
      for (int64_t j = 0; need_dv && j < g.S; ++j) std::fill_n(dv_h + j * dV.ld, g.Dv, T(0));
      return;
    }

    std::vector<T> delta(static_cast<size_t>(g.T));
    const T* o_h = O.at(b, h);
    for (int64_t i = 0; i < g.T; ++i) {
      double d = 0;
      for (int64_t c = 0; c < g.Dv; ++c) d += static_cast<double>(do_h[i * dO.ld + c]) * o_h[i * O.ld + c];
      delta[static_cast<size_t>(i)] = static_cast<T>(d);
    }

    std::vector<T> p(static_cast<size_t>(g.T * kKeyBlock)), ds(p.size());
    std::vector<bfloat16> p_copy, ds_copy;
    const Operand<T> q_m = head_operand<T>(q, b, h), k_m = head_operand<T>(k, b, kv_head),
                     v_m = head_operand<T>(v, b, kv_head), do_m = head_operand<T>(dout_operand, b, h);
    for (int64_t j0 = 0; j0 < g.S; j0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, g.S - j0), i0 = g.first_row_seeing(j0), rows = g.T - i0;
      block_product<T>(false, true, rows, nk, g.Dqk, scale, q_m.from_row(i0), k_m.from_row(j0), T(0), p.data(), nk);
      for (int64_t r = 0; r < rows; ++r) {
        T* s = p.data() + r * nk;
        const int64_t n = g.visible(i0 + r, j0, nk);
        exp_shifted(s, n, lse_h[i0 + r]);
        std::fill(s + n, s + nk, T(0));
      }
      if (need_dv)
        block_product<T>(true, false, nk, g.Dv, rows, T(1), block_operand(p.data(), rows, nk, nk, bf16, p_copy),
                         do_m.from_row(i0), T(0), dv_h + j0 * dV.ld, dV.ld);
      if (!need_dq && !need_dk) continue;
      block_product<T>(false, true, rows, nk, g.Dv, T(1), do_m.from_row(i0), v_m.from_row(j0), T(0), ds.data(), nk);
      for (int64_t r = 0; r < rows; ++r) {
        const T d = delta[static_cast<size_t>(i0 + r)];
        T *dsr = ds.data() + r * nk, *pr = p.data() + r * nk;
        for (int64_t c = 0; c < nk; ++c) dsr[c] = pr[c] * (dsr[c] - d);
      }
      const Operand<T> ds_m = block_operand(ds.data(), rows, nk, nk, bf16, ds_copy);
      if (need_dq)  // the first block (i0 = 0) initialises every row of dq
        block_product<T>(false, false, rows, g.Dqk, nk, scale, ds_m, k_m.from_row(j0), T(j0 == 0 ? 0 : 1),
                         dq_h + i0 * dQ.ld, dQ.ld);
      if (need_dk)
        block_product<T>(true, false, nk, g.Dqk, rows, scale, ds_m, q_m.from_row(i0), T(0), dk_h + j0 * dK.ld, dK.ld);
    }
  });
}

// dst[b, g] = sum over the group's query heads r of per_head[b, g * group + r] (in head order).
template <class T>
void sum_groups(const Tensor& per_head, const Tensor& dst, int64_t group) {
  const Heads<const T> src = heads_of<const T>(per_head);
  const Heads<T> out = heads_of<T>(dst);
  const int64_t B = dst.size(0), Hkv = dst.size(1), L = dst.size(2), D = dst.size(3);
  parallel_tasks(B * Hkv, [&](int64_t task) {
    const int64_t kv_head = task % Hkv, b = task / Hkv;
    T* o = out.at(b, kv_head);
    for (int64_t j = 0; j < L; ++j) {
      T* row = o + j * out.ld;
      std::copy_n(src.at(b, kv_head * group) + j * src.ld, D, row);
      for (int64_t r = 1; r < group; ++r) {
        const T* add = src.at(b, kv_head * group + r) + j * src.ld;
        for (int64_t c = 0; c < D; ++c) row[c] += add[c];
      }
    }
  });
}

std::string shapes_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  return "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape());
}

Geometry check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  const char* op = "scaled_dot_product_attention";
  if (!q.defined() || !k.defined() || !v.defined()) fail("{}: q, k and v must be defined", op);
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    fail("{}: expected q [B, H, T, Dqk], k [B, Hkv, S, Dqk], v [B, Hkv, S, Dv], got {}", op, shapes_of(q, k, v));
  if (q.dtype() != k.dtype() || q.dtype() != v.dtype())
    fail("{}: dtypes differ: q {}, k {}, v {}", op, dtype_name(q.dtype()), dtype_name(k.dtype()),
         dtype_name(v.dtype()));
  if (!is_floating(q.dtype())) fail("{}: expected floating-point q, k, v, got int64", op);
  const Geometry g{q.size(0), q.size(1), k.size(1),
                   q.size(2), k.size(2), q.size(3),
                   v.size(3), causal,    scale == 0.0 ? 1.0 / std::sqrt(static_cast<double>(q.size(3))) : scale};
  const auto fail_with = [&]<class... Args>(fmt::format_string<Args...> what, Args&&... args) {
    fail("{}: {} ({})", op, fmt::format(what, std::forward<Args>(args)...), shapes_of(q, k, v));
  };
  if (k.size(0) != g.B || v.size(0) != g.B) fail_with("batch sizes differ");
  if (v.size(1) != g.Hkv || v.size(2) != g.S) fail_with("k and v differ in heads or length");
  if (k.size(3) != g.Dqk) fail_with("q and k head dims differ");
  if (g.Dqk == 0 || g.Dv == 0) fail_with("head dims must be positive");
  if (g.Hkv == 0 || g.H % g.Hkv != 0) fail_with("{} query heads are not a multiple of {} kv heads", g.H, g.Hkv);
  if (g.S == 0 && g.T > 0) fail_with("no keys to attend to");
  if (causal && g.S < g.T)
    fail_with("causal attention needs at least as many keys as queries, got S = {} < T = {}", g.S, g.T);
  if (!std::isfinite(g.scale)) fail_with("scale must be finite, got {:f}", scale);
  return g;
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  const Geometry g = check_inputs(q, k, v, causal, scale);
  const bool recording = autograd::will_record({q, k, v});  // only then are the inputs kept, detached
  const bool bf16 = bf16_attention(q.dtype());
  // The products' operands: q, k, v as BLAS reads them, or their bf16 copies (kept instead of them).
  auto operand = [&](const Tensor& t) {
    const Tensor ready = blas_ready(recording ? t.detach() : t);
    return bf16 ? to_bf16_operand(ready) : ready;
  };
  const Tensor qc = operand(q), kc = operand(k), vc = operand(v);
  const Tensor out = empty_heads(g.B, g.H, g.T, g.Dv, is_sequence_major(qc), q.dtype());
  const Tensor lse = Tensor::empty({g.B, g.H, g.T}, q.dtype());
  bfloat16* out_rounded = rounded_copy(out);
  dispatch_floating(q.dtype(), "scaled_dot_product_attention",
                    [&]<class T>() { attention_forward<T>(g, qc, kc, vc, out, lse, out_rounded); });

  const bool need_dq = q.requires_grad(), need_dk = k.requires_grad(), need_dv = v.requires_grad();
  return autograd::record(
      "scaled_dot_product_attention", out, {q, k, v}, {qc, kc, vc, out},
      [g, qc, kc, vc, out = out.detach(), lse, need_dq, need_dk, need_dv,
       bf16](const Tensor& grad) -> std::vector<Tensor> {
        const Tensor dout = blas_ready(grad);
        const DType dtype = out.dtype();
        // Gradients are laid out like their inputs; per-head dk/dv only exist when a kv head is shared.
        const Tensor dq = need_dq ? empty_heads(g.B, g.H, g.T, g.Dqk, is_sequence_major(qc), dtype) : Tensor();
        const Tensor dk = need_dk ? empty_heads(g.B, g.Hkv, g.S, g.Dqk, is_sequence_major(kc), dtype) : Tensor();
        const Tensor dv = need_dv ? empty_heads(g.B, g.Hkv, g.S, g.Dv, is_sequence_major(vc), dtype) : Tensor();
        const bool grouped = g.group() > 1;
        const Tensor dk_heads = need_dk && grouped ? Tensor::empty({g.B, g.H, g.S, g.Dqk}, dtype) : dk;
        const Tensor dv_heads = need_dv && grouped ? Tensor::empty({g.B, g.H, g.S, g.Dv}, dtype) : dv;
        dispatch_floating(dtype, "scaled_dot_product_attention", [&]<class T>() {
          attention_backward<T>(g, qc, kc, vc, out, lse, dout, bf16 ? to_bf16_operand(dout) : dout, dq, dk_heads,
                                dv_heads);
          if (need_dk && grouped) sum_groups<T>(dk_heads, dk, g.group());
          if (need_dv && grouped) sum_groups<T>(dv_heads, dv, g.group());
        });
        return {dq, dk, dv};
      });
}

}  // namespace latent

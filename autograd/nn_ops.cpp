// Softmax family, normalisation, SwiGLU gating, losses and dropout as fused kernels: each op's shape checks, forward
// loop and backward loop sit together. Rows run in parallel in chunks fixed by the shape and each row is
// reduced in a fixed order, so results are bitwise identical for any thread count. Softmax and loss
// statistics accumulate in double whatever the tensor dtype; norm statistics see normalize_last_dim.
#include "nn_ops.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "../core/elementwise.hpp"
#include "../core/factory.hpp"
#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "elementwise.hpp"
#include "fast_math.hpp"
#include "node.hpp"
#include "reduce.hpp"

namespace latent {
namespace {

using autograd::record;

// Elements per parallel chunk of rows (rounded to whole rows); depends on the shape only.
constexpr int64_t kRowGrainElements = 1 << 14;
// Upper bound on the per-chunk partial sums a norm backward keeps for dweight/dbias.
constexpr int64_t kMaxNormChunks = 64;

// A contiguous tensor seen as independent rows along one dim: row r holds `size` elements `inner`
// apart (r = outer index * inner + column). A 0-dim tensor is one row of one element.
struct Rows {
  int64_t outer = 1, size = 1, inner = 1, count = 1;
};

Rows rows_along(const Shape& shape, int64_t dim) {
  Rows rows;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    const int64_t n = shape[static_cast<size_t>(d)];
    if (d < dim) rows.outer *= n;
    else if (d == dim) rows.size = n;
    else rows.inner *= n;
  }
  rows.count = rows.outer * rows.inner;
  return rows;
}

int64_t row_grain(int64_t elements_per_row) {
  return std::max<int64_t>(1, kRowGrainElements / std::max<int64_t>(elements_per_row, 1));
}

// Calls fn(r, offset) for every row along the last dim (contiguous, inner == 1), in fixed chunks.
template <class Fn> void for_each_row(const Rows& rows, Fn&& fn) {
  parallel_for(rows.count, row_grain(rows.size), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fn(r, r * rows.size);
  });
}

// sum of f(j) for j < n in T over one vector register's worth of interleaved partial sums (16 in f32,
// 8 in f64), added in a fixed order: it vectorises (a single running sum is a serial chain) and
// never depends on the threads.
template <class T, class F> T lane_sum(int64_t n, F f) {
  constexpr int kLanes = 64 / sizeof(T);
  T lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += f(j + l);
  T total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; j < n; ++j) total += f(j);
  return total;
}

template <class T> T lane_max(const T* x, int64_t n) {
  constexpr int kLanes = 64 / sizeof(T);
  T lanes[kLanes];
  std::fill_n(lanes, kLanes, -std::numeric_limits<T>::infinity());
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] = std::max(lanes[l], x[j + l]);
  T m = -std::numeric_limits<T>::infinity();
  for (int l = 0; l < kLanes; ++l) m = std::max(m, lanes[l]);
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// log(sum(exp(x))) of a contiguous row, shifted by its max so exp stays in range (and <= 1, the
// domain of fast_math's vectorisable exp).
template <class T> double row_logsumexp(const T* x, int64_t n) {
  const T m = lane_max(x, n);
  const T total = lane_sum<T>(n, [&](int64_t j) { return fast_math::exp_nonpositive(x[j] - m); });
  return static_cast<double>(m) + std::log(static_cast<double>(total));
}

// ---- softmax family ---------------------------------------------------------------------------

// The softmax family reduces `lanes` adjacent rows at once: element j of lane l sits at
// offset + j * stride + l. Along the last dim a panel is one contiguous row (stride and lanes are
// compile-time 1, the fast path); along another dim it is up to kLanes neighbouring columns, so each
// load is a contiguous run instead of a walk down one column (whose power-of-two stride would also
// thrash the cache sets). Each lane is still reduced sequentially over j: results do not depend on
// the panel cut or the thread count.
constexpr int64_t kLanes = 32;
using One = std::integral_constant<int64_t, 1>;

template <class Fn> void for_each_panel(const Rows& rows, Fn&& fn) {
  if (rows.inner == 1) {
    for_each_row(rows, [&](int64_t, int64_t at) { fn(at, One{}, One{}); });
    return;
  }
  const int64_t panels_per_outer = (rows.inner + kLanes - 1) / kLanes;
  const int64_t panels = rows.outer * panels_per_outer;
  parallel_for(panels, row_grain(rows.size * kLanes), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t outer = p / panels_per_outer, first = (p % panels_per_outer) * kLanes;
      fn(outer * rows.size * rows.inner + first, rows.inner, std::min(kLanes, rows.inner - first));
    }
  });
}

// Shared by softmax and log_softmax: the checked dim and the input's rows along it.
Rows softmax_rows(const Tensor& x, int64_t& dim, const char* op) {
  dim = normalize_dim(dim, x.dim(), op);
  return rows_along(x.shape(), dim);
}

// A new tensor like x whose rows along the softmax dim are panel(in, out, n, stride, lanes) of x's:
// the forward shape both softmax and log_softmax share.
template <class T, class Panel> Tensor map_panels(const Tensor& x, const Rows& rows, Panel&& panel) {
  const Tensor xc = contiguous_copy(x.detach());
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  const T* px = xc.data<T>();
  T* py = y.data<T>();
  for_each_panel(rows, [&](int64_t at, auto stride, auto lanes) { panel(px + at, py + at, rows.size, stride, lanes); });
  return y;
}

// The gradient of a softmax-like op from its output y: panel(y, dy, dx, n, stride, lanes) per panel.
template <class T, class Panel> Tensor map_grad_panels(const Tensor& y, const Tensor& grad, const Rows& rows, Panel&& panel) {
  const Tensor dy = contiguous_copy(grad);
  Tensor dx = Tensor::empty(y.shape(), y.dtype());
  const T *pdy = dy.data<T>(), *py = y.data<T>();
  T* pdx = dx.data<T>();
  for_each_panel(rows, [&](int64_t at, auto stride, auto lanes) { panel(py + at, pdy + at, pdx + at, rows.size, stride, lanes); });
  return dx;
}

// Per-lane max over a panel: the shift that keeps exp in range.
template <class T, class Stride, class Lanes> void panel_max(const T* x, int64_t n, Stride stride, Lanes lanes, T* m) {
  for (int64_t l = 0; l < lanes; ++l) m[l] = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j)
    for (int64_t l = 0; l < lanes; ++l) m[l] = std::max(m[l], x[j * stride + l]);
}

// ---- normalisation over the last dim ---------------------------------------------------------

void check_norm_param(const char* op, const char* what, const Tensor& x, const Tensor& p) {
  if (!p.defined()) return;
  if (p.shape() != Shape{x.size(-1)})
    fail("{}: {} {} does not match the last dim of input {}", op, what, shape_str(p.shape()), shape_str(x.shape()));
  if (p.dtype() != x.dtype())
    fail("{}: {} dtype {} differs from input dtype {}", op, what, dtype_name(p.dtype()), dtype_name(x.dtype()));
}

// Sum over chunks of per-chunk partials [chunks, D], added in chunk order in double: a deterministic
// reduction over rows whatever thread ran which chunk.
template <class T> Tensor sum_partials(const Tensor& partials) {
  const int64_t chunks = partials.size(0), width = partials.size(1);
  Tensor out = Tensor::empty({width}, dtype_of<T>());
  const T* p = partials.data<T>();
  T* q = out.data<T>();
  parallel_for(width, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      double acc = 0;
      for (int64_t c = 0; c < chunks; ++c) acc += p[c * width + j];
      q[j] = static_cast<T>(acc);
    }
  });
  return out;
}

// layer_norm and rms_norm, which differ only in centring (and rms_norm has no bias):
//   xhat = (x - mean) * rstd,  rstd = 1 / sqrt(mean((x - mean)^2) + eps),  y = xhat * w + b,
// with mean := 0 for rms_norm. Mean and rstd are saved per row. Backward, with dxhat = dy * w:
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (no mean(dxhat) term uncentred)
//   dw = sum over rows of dy * xhat,  db = sum over rows of dy.
// Per-row sums run in the tensor's type (f32 or better, the precision docs/architecture.md, "Numbers", asks of norm
// statistics; in f64 the f32 kernel would be three times slower), sums over rows in double.
template <class T>
Tensor normalize_last_dim(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                          bool centered) {
  const Rows rows = rows_along(x.shape(), x.dim() - 1);
  const int64_t width = rows.size;
  // What the backward keeps (detached copies, the row statistics) only exists when a node is recorded.
  const bool recording = autograd::will_record({x, weight, bias});
  const Tensor xc = contiguous_copy(recording ? x.detach() : x);
  // No weight is a weight of ones: one loop shape for both.
  const Tensor wc = weight.defined() ? contiguous_copy(recording ? weight.detach() : weight) : full({width}, 1.0, x.dtype());
  const Tensor bc = bias.defined() ? contiguous_copy(bias) : Tensor();
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  Tensor mean = recording ? Tensor::empty({rows.count}, x.dtype()) : Tensor();
  Tensor rstd = recording ? Tensor::empty({rows.count}, x.dtype()) : Tensor();
  // Under kBFloat16 the output's readers are GEMMs (the linear layers after a norm): each row is
  // rounded as it is written, rather than each reader reading all of y again to round it.
  bfloat16* const rounded = rounded_copy(y);
  {
    const T *px = xc.data<T>(), *pw = wc.data<T>();
    const T* pb = bc.defined() ? bc.data<T>() : nullptr;
    T *py = y.data<T>(), *pmean = recording ? mean.data<T>() : nullptr, *prstd = recording ? rstd.data<T>() : nullptr;
    const T n = static_cast<T>(width);
    for_each_row(rows, [&](int64_t r, int64_t at) {
      const T* in = px + at;
      T* out = py + at;
      const T mu = centered ? lane_sum<T>(width, [&](int64_t j) { return in[j]; }) / n : T(0);
      // Second pass over the centred values: no cancellation from E[x^2] - E[x]^2.
      const T var = lane_sum<T>(width, [&](int64_t j) { return (in[j] - mu) * (in[j] - mu); }) / n;
      const T rs = static_cast<T>(1.0 / std::sqrt(static_cast<double>(var) + eps));
      if (pmean) pmean[r] = mu, prstd[r] = rs;
      if (pb)
        for (int64_t j = 0; j < width; ++j) out[j] = (in[j] - mu) * rs * pw[j] + pb[j];
      else
        for (int64_t j = 0; j < width; ++j) out[j] = (in[j] - mu) * rs * pw[j];
      if constexpr (std::is_same_v<T, float>)
        if (rounded) float_to_bfloat16_here(out, rounded + at, width);
    });
  }
  if (!recording) return y;
  const bool need_dx = x.requires_grad(), need_dw = weight.defined() && weight.requires_grad(),
             need_db = bias.defined() && bias.requires_grad();
  return record(op, y, {x, weight, bias}, {xc, wc},
                [xc, wc, mean, rstd, rows, centered, need_dx, need_dw, need_db](const Tensor& grad) -> std::vector<Tensor> {
    const int64_t width = rows.size;
    const Tensor dy = contiguous_copy(grad);
    // Chunks of rows, each with its own dw/db partial; the cut depends on the shape only.
    const int64_t chunk = std::max(row_grain(width), (rows.count + kMaxNormChunks - 1) / kMaxNormChunks);
    const int64_t chunks = (rows.count + chunk - 1) / chunk;
    Tensor dx = need_dx ? Tensor::empty(xc.shape(), xc.dtype()) : Tensor();
    Tensor dw_partials = need_dw ? Tensor::empty({chunks, width}, xc.dtype()) : Tensor();
    Tensor db_partials = need_db ? Tensor::empty({chunks, width}, xc.dtype()) : Tensor();
    const T *px = xc.data<T>(), *pw = wc.data<T>(), *pdy = dy.data<T>();
    const T *pmean = mean.data<T>(), *prstd = rstd.data<T>();
    T* pdx = need_dx ? dx.data<T>() : nullptr;
    const T n = static_cast<T>(width);
    parallel_for(rows.count, chunk, [&](int64_t begin, int64_t end) {
      const int64_t c = begin / chunk;
      T* dw = need_dw ? dw_partials.data<T>() + c * width : nullptr;
      T* db = need_db ? db_partials.data<T>() + c * width : nullptr;
      if (dw) std::fill_n(dw, width, T(0));
      if (db) std::fill_n(db, width, T(0));
      for (int64_t r = begin; r < end; ++r) {
        const T *in = px + r * width, *g = pdy + r * width;
        const T mu = pmean[r], rs = prstd[r];
        if (dw)
          for (int64_t j = 0; j < width; ++j) dw[j] += g[j] * ((in[j] - mu) * rs);
        if (db)
          for (int64_t j = 0; j < width; ++j) db[j] += g[j];
        if (!pdx) continue;
        const T mean_dxhat = centered ? lane_sum<T>(width, [&](int64_t j) { return g[j] * pw[j]; }) / n : T(0);
        const T mean_dxhat_xhat = lane_sum<T>(width, [&](int64_t j) { return g[j] * pw[j] * ((in[j] - mu) * rs); }) / n;
        T* out = pdx + r * width;
        for (int64_t j = 0; j < width; ++j)
          out[j] = rs * (g[j] * pw[j] - mean_dxhat - (in[j] - mu) * rs * mean_dxhat_xhat);
      }
    });
    return {dx, need_dw ? sum_partials<T>(dw_partials) : Tensor(), need_db ? sum_partials<T>(db_partials) : Tensor()};
  });
}

// ---- losses ------------------------------------------------------------------------------------

// Checks an [N, C] loss input and its Int64 [N] targets (each in [0, C) or ignore_index); returns
// the targets contiguous and sets `kept` to the number of rows not ignored.
Tensor checked_targets(const char* op, const char* input_name, const Tensor& input, const Tensor& targets,
                       int64_t ignore_index, int64_t& kept) {
  if (input.dim() != 2) fail("{}: {} must be [N, C], got {}", op, input_name, shape_str(input.shape()));
  check_floating(input.dtype(), op);
  const int64_t n = input.size(0), classes = input.size(1);
  if (targets.dtype() != kInt64 || targets.shape() != Shape{n})
    fail("{}: targets must be int64 [{}], got {} {}", op, n, dtype_name(targets.dtype()), shape_str(targets.shape()));
  const Tensor tc = contiguous_copy(targets.detach());
  const int64_t* t = tc.data<int64_t>();
  kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (t[i] == ignore_index) continue;
    if (t[i] < 0 || t[i] >= classes) fail("{}: target {} (row {}) out of range [0, {})", op, t[i], i, classes);
    ++kept;
  }
  return tc;
}

}  // namespace

// y = exp(x - max) / sum(exp(x - max)); the shift keeps exp finite and cancels in the ratio.
// Backward: dx = y * (dy - sum(dy * y)).
Tensor softmax(const Tensor& x, int64_t dim) {
  const Rows rows = softmax_rows(x, dim, "softmax");
  return dispatch_floating(x.dtype(), "softmax", [&]<class T>() {
    Tensor y = map_panels<T>(x, rows, [](const T* in, T* out, int64_t n, auto stride, auto lanes) {
      T m[kLanes];
      double total[kLanes] = {};
      panel_max(in, n, stride, lanes, m);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t l = 0; l < lanes; ++l) {
          const T e = std::exp(in[j * stride + l] - m[l]);
          out[j * stride + l] = e;
          total[l] += e;
        }
      for (int64_t l = 0; l < lanes; ++l) total[l] = 1.0 / total[l];
      for (int64_t j = 0; j < n; ++j)
        for (int64_t l = 0; l < lanes; ++l) out[j * stride + l] = static_cast<T>(out[j * stride + l] * total[l]);
    });
    return record("softmax", y, {x}, {y}, [y = y.detach(), rows](const Tensor& grad) -> std::vector<Tensor> {
      return {map_grad_panels<T>(y, grad, rows, [](const T* py, const T* pdy, T* pdx, int64_t n, auto stride, auto lanes) {
        double dot[kLanes] = {};
        for (int64_t j = 0; j < n; ++j)
          for (int64_t l = 0; l < lanes; ++l) dot[l] += static_cast<double>(pdy[j * stride + l]) * py[j * stride + l];
        for (int64_t j = 0; j < n; ++j)
          for (int64_t l = 0; l < lanes; ++l) {
            const int64_t i = j * stride + l;
            pdx[i] = static_cast<T>(py[i] * (pdy[i] - dot[l]));
          }
      })};
    });
  });
}

// y = x - logsumexp(x). Backward: dx = dy - exp(y) * sum(dy).
Tensor log_softmax(const Tensor& x, int64_t dim) {
  const Rows rows = softmax_rows(x, dim, "log_softmax");
  return dispatch_floating(x.dtype(), "log_softmax", [&]<class T>() {
    Tensor y = map_panels<T>(x, rows, [](const T* in, T* out, int64_t n, auto stride, auto lanes) {
      T m[kLanes];
      double lse[kLanes] = {};
      panel_max(in, n, stride, lanes, m);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t l = 0; l < lanes; ++l) lse[l] += std::exp(in[j * stride + l] - m[l]);
      for (int64_t l = 0; l < lanes; ++l) lse[l] = static_cast<double>(m[l]) + std::log(lse[l]);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t l = 0; l < lanes; ++l) out[j * stride + l] = static_cast<T>(in[j * stride + l] - lse[l]);
    });
    return record("log_softmax", y, {x}, {y}, [y = y.detach(), rows](const Tensor& grad) -> std::vector<Tensor> {
      return {map_grad_panels<T>(y, grad, rows, [](const T* py, const T* pdy, T* pdx, int64_t n, auto stride, auto lanes) {
        double total[kLanes] = {};
        for (int64_t j = 0; j < n; ++j)
          for (int64_t l = 0; l < lanes; ++l) total[l] += pdy[j * stride + l];
        for (int64_t j = 0; j < n; ++j)
          for (int64_t l = 0; l < lanes; ++l) {
            const int64_t i = j * stride + l;
            pdx[i] = static_cast<T>(pdy[i] - std::exp(static_cast<double>(py[i])) * total[l]);
          }
      })};
    });
  });
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  if (x.dim() == 0) fail("rms_norm: input must have at least one dim, got a 0-dim tensor");
  if (!weight.defined()) fail("rms_norm: weight is undefined");
  check_norm_param("rms_norm", "weight", x, weight);
  return dispatch_floating(x.dtype(), "rms_norm", [&]<class T>() {
    return normalize_last_dim<T>("rms_norm", x, weight, Tensor(), eps, false);
  });
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  if (x.dim() == 0) fail("layer_norm: input must have at least one dim, got a 0-dim tensor");
  check_norm_param("layer_norm", "weight", x, weight);
  check_norm_param("layer_norm", "bias", x, bias);
  return dispatch_floating(x.dtype(), "layer_norm", [&]<class T>() {
    return normalize_last_dim<T>("layer_norm", x, weight, bias, eps, true);
  });
}

// out = silu(g) * u = g * s * u with s = sigmoid(g). Backward, from d silu / dg = s * (1 + g * (1 - s)):
//   dg = dout * u * s * (1 + g * (1 - s)),   du = dout * g * s.
template <class T> void swiglu_forward(const T* gate, const T* up, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * fast_math::sigmoid(gate[i]) * up[i];
}

template <class T>
void swiglu_backward(const T* __restrict gate, const T* __restrict up, const T* __restrict dout, T scale,
                     T* __restrict dgate, T* __restrict dup, T* __restrict out, int64_t n) {
  // __restrict (the header's no-alias rule) lets both loops vectorise: with six pointers the compiler
  // would not version them for aliasing itself, and the loops ran 8x slower (perf, in the experts op).
  const auto element = [&](int64_t i) {  // returns s
    const T g = gate[i], s = fast_math::sigmoid(g), d = scale * dout[i];
    dgate[i] = d * up[i] * s * std::fma(g, T(1) - s, T(1));
    dup[i] = d * g * s;
    return s;
  };
  if (out)  // two loops, so that each vectorises without a test per element
    for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * element(i) * up[i];
  else
    for (int64_t i = 0; i < n; ++i) element(i);
}
template void swiglu_forward<float>(const float*, const float*, float*, int64_t);
template void swiglu_forward<double>(const double*, const double*, double*, int64_t);
template void swiglu_backward<float>(const float*, const float*, const float*, float, float*, float*, float*, int64_t);
template void swiglu_backward<double>(const double*, const double*, const double*, double, double*, double*, double*,
                                      int64_t);

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  if (gate.shape() != up.shape())
    fail("swiglu: gate {} and up {} differ in shape", shape_str(gate.shape()), shape_str(up.shape()));
  if (gate.dtype() != up.dtype())
    fail("swiglu: gate is {}, up is {}", dtype_name(gate.dtype()), dtype_name(up.dtype()));
  return dispatch_floating(gate.dtype(), "swiglu", [&]<class T>() {
    const Tensor g = contiguous_copy(gate.detach()), u = contiguous_copy(up.detach());
    Tensor out = Tensor::empty(gate.shape(), gate.dtype());
    const T *pg = g.data<T>(), *pu = u.data<T>();
    T* po = out.data<T>();
    parallel_for(out.numel(), kElementwiseGrain,
                 [&](int64_t begin, int64_t end) { swiglu_forward(pg + begin, pu + begin, po + begin, end - begin); });
    return record("swiglu", out, {gate, up}, {g, u}, [g, u](const Tensor& grad) -> std::vector<Tensor> {
      const Tensor dout = contiguous_copy(grad);
      Tensor dg = Tensor::empty(g.shape(), g.dtype()), du = Tensor::empty(u.shape(), u.dtype());
      const T *pg = g.data<T>(), *pu = u.data<T>(), *pd = dout.data<T>();
      T *pdg = dg.data<T>(), *pdu = du.data<T>();
      parallel_for(dg.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
        swiglu_backward(pg + begin, pu + begin, pd + begin, T(1), pdg + begin, pdu + begin, static_cast<T*>(nullptr),
                        end - begin);
      });
      return {dg, du};
    });
  });
}

// loss = mean over kept rows i of (logsumexp(x_i) - x_i[t_i]); only the per-row logsumexp is saved.
// Backward: dlogits_i = (softmax(x_i) - onehot(t_i)) * g / kept, zero on ignored rows.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  int64_t kept = 0;
  const Tensor tc = checked_targets("cross_entropy", "logits", logits, targets, ignore_index, kept);
  const Rows rows = rows_along(logits.shape(), 1);
  return dispatch_floating(logits.dtype(), "cross_entropy", [&]<class T>() {
    const Tensor xc = contiguous_copy(logits.detach());
    Tensor lse = Tensor::empty({rows.count}, kFloat64), row_loss = Tensor::empty({rows.count}, kFloat64);
    {
      const T* px = xc.data<T>();
      const int64_t* pt = tc.data<int64_t>();
      double *plse = lse.data<double>(), *ploss = row_loss.data<double>();
      for_each_row(rows, [&](int64_t r, int64_t at) {
        if (pt[r] == ignore_index) {
          plse[r] = ploss[r] = 0;
          return;
        }
        plse[r] = row_logsumexp(px + at, rows.size);
        ploss[r] = plse[r] - px[at + pt[r]];
      });
    }
    double total = 0;  // rows added in order: deterministic
    for (int64_t r = 0; r < rows.count; ++r) total += row_loss.data<double>()[r];
    Tensor loss = scalar_tensor(kept == 0 ? 0.0 : total / static_cast<double>(kept), logits.dtype());
    auto backward = [xc, tc, lse, rows, kept, ignore_index](const Tensor& grad) -> std::vector<Tensor> {
      const double scale = kept == 0 ? 0.0 : grad.item() / static_cast<double>(kept);
      Tensor dx = Tensor::empty(xc.shape(), xc.dtype());
      const T* px = xc.data<T>();
      const int64_t* pt = tc.data<int64_t>();
      const double* plse = lse.data<double>();
      T* pdx = dx.data<T>();
      for_each_row(rows, [&](int64_t r, int64_t at) {
        if (pt[r] == ignore_index) {
          std::fill_n(pdx + at, rows.size, T(0));
          return;
        }
        const T shift = static_cast<T>(plse[r]), g = static_cast<T>(scale);
        for (int64_t j = 0; j < rows.size; ++j) pdx[at + j] = fast_math::exp_nonpositive(px[at + j] - shift) * g;
        pdx[at + pt[r]] -= g;  // the one-hot term
      });
      return {dx};
    };
    return record("cross_entropy", loss, {logits}, {xc, tc}, std::move(backward));
  });
}

// loss = -mean over kept rows i of x_i[t_i]. Backward: dx_i[t_i] = -g / kept, zero elsewhere.
// Reads the picked entries through the input's strides: no copy of the [N, C] input.
Tensor nll_loss(const Tensor& log_probs, const Tensor& targets, int64_t ignore_index) {
  int64_t kept = 0;
  const Tensor tc = checked_targets("nll_loss", "input", log_probs, targets, ignore_index, kept);
  return dispatch_floating(log_probs.dtype(), "nll_loss", [&]<class T>() {
    const T* px = log_probs.data<T>();
    const int64_t* pt = tc.data<int64_t>();
    const int64_t n = log_probs.size(0), row_stride = log_probs.stride(0), class_stride = log_probs.stride(1);
    double total = 0;
    for (int64_t i = 0; i < n; ++i)
      if (pt[i] != ignore_index) total -= px[i * row_stride + pt[i] * class_stride];
    Tensor loss = scalar_tensor(kept == 0 ? 0.0 : total / static_cast<double>(kept), log_probs.dtype());
    auto backward = [shape = log_probs.shape(), tc, kept, ignore_index](const Tensor& grad) -> std::vector<Tensor> {
      Tensor dx = zeros(shape, dtype_of<T>());
      if (kept == 0) return {dx};
      const T picked = static_cast<T>(-grad.item() / static_cast<double>(kept));
      const int64_t* pt = tc.data<int64_t>();
      T* pdx = dx.data<T>();
      for (int64_t i = 0; i < shape[0]; ++i)
        if (pt[i] != ignore_index) pdx[i * shape[1] + pt[i]] = picked;
      return {dx};
    };
    return record("nll_loss", loss, {log_probs}, {tc}, std::move(backward));
  });
}

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  if (input.shape() != target.shape())
    fail("mse_loss: input {} and target {} differ", shape_str(input.shape()), shape_str(target.shape()));
  return mean(square(input - target));
}

// y_i = x_i / (1 - p) where the i-th uniform draw is >= p, else 0. Forward and backward are the same
// masked scaling; the backward redraws the mask from the same Philox counters instead of storing it.
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  if (!(p >= 0 && p <= 1)) fail("dropout: p must be in [0, 1], got {:f}", p);
  if (!training || p == 0) return x;
  return dispatch_floating(x.dtype(), "dropout", [&]<class T>() {
    Generator& source = gen ? *gen : default_generator();
    const int64_t n = x.numel();
    const uint64_t seed = source.seed(), first = source.advance(static_cast<uint64_t>(n));
    const double scale = p == 1 ? 0.0 : 1.0 / (1.0 - p);
    auto masked = [p, scale, seed, first](const Tensor& in) {
      const Tensor c = contiguous_copy(in);
      Tensor out = Tensor::empty(c.shape(), c.dtype());
      const Generator draws(seed);  // a draw depends only on (seed, counter), not on the offset
      const T* pin = c.data<T>();
      T* pout = out.data<T>();
      parallel_for(c.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          pout[i] = draws.uniform(first + static_cast<uint64_t>(i)) >= p ? static_cast<T>(pin[i] * scale) : T(0);
      });
      return out;
    };
    return record("dropout", masked(x.detach()), {x},
                  [masked](const Tensor& grad) -> std::vector<Tensor> { return {masked(grad)}; });
  });
}

}  // namespace latent

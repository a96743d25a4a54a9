// mla_absorbed_attention: its checks, the composition that defines it, and the fused decoding step.
#include "mla_absorbed.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/bf16_weights.hpp"
#include "../core/gemm.hpp"
#include "../core/gemm_bf16.hpp"
#include "../core/matmul_precision.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "attention.hpp"
#include "fast_math.hpp"
#include "linalg.hpp"
#include "node.hpp"
#include "shape_ops.hpp"

namespace latent {
namespace {

struct Geometry {
  int64_t B, T, H, nope, rope, S, rank, v;
  int64_t key_dim() const { return rank + rope; }
};

Geometry check_inputs(const Tensor& q_nope, const Tensor& q_pe, const Tensor& cache, const Tensor& w, int64_t v) {
  const auto shapes = [&] {
    return "q_nope " + shape_str(q_nope.shape()) + ", q_pe " + shape_str(q_pe.shape()) + ", cache " +
           shape_str(cache.shape()) + ", kv_b_weight " + shape_str(w.shape()) + ", v_dim " + std::to_string(v);
  };
  if (q_nope.dim() != 4 || q_pe.dim() != 4 || cache.dim() != 3 || w.dim() != 2)
    fail("mla_absorbed_attention: expected q_nope [B, T, H, nope], q_pe [B, T, H, rope], cache [B, S, rank + rope], "
         "kv_b_weight [H * (nope + v), rank], got {}",
         shapes());
  const Geometry g{q_nope.size(0), q_nope.size(1), q_nope.size(2), q_nope.size(3),
                   q_pe.size(3),   cache.size(1),  w.size(1),      v};
  if (q_pe.size(0) != g.B || q_pe.size(1) != g.T || q_pe.size(2) != g.H || cache.size(0) != g.B)
    fail("mla_absorbed_attention: q_nope, q_pe and cache must agree in [B, T(, H)], got {}", shapes());
  if (cache.size(2) != g.rank + g.rope || w.size(0) != g.H * (g.nope + g.v) || v <= 0 || g.rank == 0)
    fail("mla_absorbed_attention: the cache rows must hold rank + rope and kv_b_weight H * (nope + v) rows of rank, "
         "got {}",
         shapes());
  if (g.S < g.T) fail("mla_absorbed_attention: the cache of {} positions must hold the {} queries, got {}", g.S, g.T, shapes());
  if (!is_floating(q_nope.dtype()) || q_pe.dtype() != q_nope.dtype() || cache.dtype() != q_nope.dtype() ||
      w.dtype() != q_nope.dtype())
    fail("mla_absorbed_attention: inputs must be of one floating-point dtype, got {}, {}, {}, {}",
         dtype_name(q_nope.dtype()), dtype_name(q_pe.dtype()), dtype_name(cache.dtype()), dtype_name(w.dtype()));
  return g;
}

// The definition, in differentiable ops: the cache is one kv head shared by every query head (MQA),
// its rows the keys and their first `rank` columns the values.
Tensor composed(const Geometry& g, const Tensor& q_nope, const Tensor& q_pe, const Tensor& cache,
                const Tensor& kv_b_weight, double scale) {
  const Tensor w = reshape(kv_b_weight, {g.H, g.nope + g.v, g.rank});
  const Tensor w_uk = narrow(w, 1, 0, g.nope), w_uv = narrow(w, 1, g.nope, g.v);
  const Tensor q_lat = matmul(permute(q_nope, {0, 2, 1, 3}), w_uk);  // [B, H, T, rank]
  const Tensor query = cat({q_lat, permute(q_pe, {0, 2, 1, 3})}, 3);
  const Tensor key = unsqueeze(cache, 1);  // [B, 1, S, rank + rope]
  const Tensor o_lat = scaled_dot_product_attention(query, key, narrow(key, 3, 0, g.rank), true, scale);
  const Tensor out = matmul(o_lat, transpose(w_uv, 1, 2));  // [B, H, T, v]
  return reshape(permute(out, {0, 2, 1, 3}), {g.B, g.T, g.H * g.v});
}

// The decoding step (T = 1, every cached position visible), per batch entry and head h, with
// W = kv_b_weight and D = rank + rope:
//   query_h = scale * [q_nope_h W_UK_h, q_pe_h]          (D values; scale folded in once)
//   s = query C^T                                        [H, S], one product for all heads
//   p = exp(s - rowmax),  o_lat = (p C[:, :rank]) / rowsum(p)   [H, rank]
//   out_h = W_UV_h o_lat_h                               [v]
// C (the cache) and W are read in place; the two products over the cache are [H, S] panels. Under
// kBFloat16 (`rounded` given) the products read the rounded C and W (the cache's copy is kept current
// as rows are appended: models/mla.hpp, LatentCache) and round their small left operands.
struct Rounded {
  const bfloat16* cache;
  int64_t cache_batch_stride, cache_ld;
  const bfloat16* w;
  int64_t w_ld;
};

template <class T>
void decode_step(const Geometry& g, const Tensor& q_nope, const Tensor& q_pe, const Tensor& cache, const Tensor& w,
                 const Tensor& out, T scale, const Rounded* rounded) {
  const int64_t D = g.key_dim(), ldw = w.stride(0), ldc = cache.stride(1);
  const T *pn = q_nope.data<T>(), *pp = q_pe.data<T>(), *pc = cache.data<T>(), *pw = w.data<T>();
  T* po = out.data<T>();
  const int64_t work = g.B * g.H * (g.nope * g.rank + 2 * g.S * D + g.v * g.rank);
  // C = A op(B) (B stored transposed when tb) for A [M, K] with leading dimension K; B is the cache or W
  // in place (rows ldb apart), `b16` its rounded copy (rows ldb16 apart), read under kBFloat16.
  auto product = [&](bool tb, int64_t M, int64_t N, int64_t K, const T* a, const T* b, int64_t ldb,
                     const bfloat16* b16, int64_t ldb16, T* c, int64_t ldc_out) {
    if constexpr (std::is_same_v<T, float>)
      if (rounded) {
        thread_local std::vector<bfloat16> a16;
        a16.resize(static_cast<size_t>(M * K));
        round_to_bf16(a, M, K, K, a16.data());
        return gemm_bf16(false, tb, M, N, K, 1.0f, a16.data(), K, b16, ldb16, 0.0f, c, ldc_out);
      }
    gemm_serial<T>(false, tb, M, N, K, T(1), a, K, b, ldb, T(0), c, ldc_out);
  };
  parallel_tasks(g.B, work, [&](int64_t b) {
    std::vector<T> query(static_cast<size_t>(g.H * D), T(0)), scores(static_cast<size_t>(g.H * g.S)),
        latent(static_cast<size_t>(g.H * g.rank));
    const T* c = pc + b * cache.stride(0);
    const bfloat16* c16 = rounded ? rounded->cache + b * rounded->cache_batch_stride : nullptr;
    const int64_t ldc16 = rounded ? rounded->cache_ld : 0;
    for (int64_t h = 0; h < g.H; ++h) {
      T* qh = query.data() + h * D;
      const T* nope_h = pn + b * q_nope.stride(0) + h * q_nope.stride(2);
      for (int64_t i = 0; i < g.nope; ++i) {  // q_lat_h += q_nope_h[i] * (row i of W_UK_h)
        const T a = scale * nope_h[i * q_nope.stride(3)];
        const T* row = pw + (h * (g.nope + g.v) + i) * ldw;
        for (int64_t r = 0; r < g.rank; ++r) qh[r] = std::fma(a, row[r], qh[r]);
      }
      const T* pe_h = pp + b * q_pe.stride(0) + h * q_pe.stride(2);
      for (int64_t d = 0; d < g.rope; ++d) qh[g.rank + d] = scale * pe_h[d * q_pe.stride(3)];
    }
    product(true, g.H, g.S, D, query.data(), c, ldc, c16, ldc16, scores.data(), g.S);
    std::vector<T> inverse_sum(static_cast<size_t>(g.H));
    for (int64_t h = 0; h < g.H; ++h) {
      T* s = scores.data() + h * g.S;
      const T m = fast_math::lane_max(s, g.S);
      for (int64_t j = 0; j < g.S; ++j) s[j] = fast_math::exp_nonpositive(s[j] - m);
      // >= 1: the maximum contributes exp(0)
      inverse_sum[static_cast<size_t>(h)] = T(1) / fast_math::lane_sum(s, g.S);
    }
    product(false, g.H, g.rank, g.S, scores.data(), c, ldc, c16, ldc16, latent.data(), g.rank);
    for (int64_t h = 0; h < g.H; ++h) {
      T* lat = latent.data() + h * g.rank;
      for (int64_t r = 0; r < g.rank; ++r) lat[r] *= inverse_sum[static_cast<size_t>(h)];
      // out_h = W_UV_h lat: one row of W_UV_h per value dim.
      const int64_t uv = h * (g.nope + g.v) + g.nope;  // its first row
      product(true, 1, g.v, g.rank, lat, pw + uv * ldw, ldw, rounded ? rounded->w + uv * rounded->w_ld : nullptr,
              rounded ? rounded->w_ld : 0, po + (b * g.H + h) * g.v, g.v);
    }
  });
}

}  // namespace

Tensor mla_absorbed_attention(const Tensor& q_nope, const Tensor& q_pe, const Tensor& cache, const Tensor& kv_b_weight,
                              int64_t v_dim, double scale) {
  const Geometry g = check_inputs(q_nope, q_pe, cache, kv_b_weight, v_dim);
  if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(g.key_dim()));  // as scaled_dot_product_attention
  if (g.T != 1 || autograd::will_record({q_nope, q_pe, cache, kv_b_weight}))
    return composed(g, q_nope, q_pe, cache, kv_b_weight, scale);
  const Tensor c = cache.stride(2) == 1 ? cache : contiguous_copy(cache);
  const Tensor w = kv_b_weight.stride(1) == 1 ? kv_b_weight : contiguous_copy(kv_b_weight);
  Tensor out = Tensor::empty({g.B, 1, g.H * g.v}, q_nope.dtype());
  // Rounded once per call at most: the cache's copy is usually current already, W's is cached per version.
  const bool bf16 = q_nope.dtype() == kFloat32 && get_matmul_precision() == MatmulPrecision::kBFloat16;
  const Tensor c16 = bf16 ? to_bf16_operand(c) : Tensor();
  const Tensor w16 = !bf16 ? Tensor() : w.storage() == kv_b_weight.storage() ? bf16_weight(w) : to_bf16_operand(w);
  // A copy made here may close the gaps between C's rows: its own strides say where each row is (a
  // single row's stride is arbitrary; a GEMM wants at least its length).
  const Rounded rounded = !bf16 ? Rounded{}
                                : Rounded{c16.data<bfloat16>(), c16.stride(0), g.S > 1 ? c16.stride(1) : g.key_dim(),
                                          w16.data<bfloat16>(), w16.stride(0)};
  dispatch_floating(q_nope.dtype(), "mla_absorbed_attention", [&]<class T>() {
    decode_step<T>(g, q_nope, q_pe, c, w, out, static_cast<T>(scale), bf16 ? &rounded : nullptr);
  });
  return out;
}

}  // namespace latent

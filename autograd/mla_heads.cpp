// mla_heads: its checks, the one-pass assembly of MLA's heads, and the one-pass backward.
#include "mla_heads.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "../core/gemm.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "node.hpp"
#include "rotary.hpp"

namespace latent {
namespace {

void check_inputs(const Tensor& q, const Tensor& kv, const Tensor& k_pe, const Tensor& cos, const Tensor& sin,
                  int64_t nope) {
  const auto shapes = [&] {
    return "q " + shape_str(q.shape()) + ", kv " + shape_str(kv.shape()) + ", k_pe " + shape_str(k_pe.shape()) +
           ", nope " + std::to_string(nope);
  };
  if (q.dim() != 4 || kv.dim() != 4 || k_pe.dim() != 3)
    fail("mla_heads: expected q [B, L, H, nope + rope], kv [B, L, H, nope + V], k_pe [B, L, rope], got {}", shapes());
  const int64_t rope = q.size(3) - nope;
  if (nope < 0 || rope < 0 || rope % 2 != 0)
    fail("mla_heads: q's last dim must be nope plus an even rope dim, got {}", shapes());
  for (int64_t d = 0; d < 3; ++d)
    if (kv.size(d) != q.size(d) || (d < 2 && k_pe.size(d) != q.size(d)))
      fail("mla_heads: q, kv and k_pe must agree in [B, L(, H)], got {}", shapes());
  if (kv.size(3) < nope || k_pe.size(2) != rope)
    fail("mla_heads: kv's last dim must hold nope + V and k_pe's the rope dim {}, got {}", rope, shapes());
  if (!is_floating(q.dtype()) || kv.dtype() != q.dtype() || k_pe.dtype() != q.dtype())
    fail("mla_heads: q, kv and k_pe must be of one floating-point dtype, got {}, {}, {}", dtype_name(q.dtype()),
         dtype_name(kv.dtype()), dtype_name(k_pe.dtype()));
  for (const Tensor* table : {&cos, &sin})
    if (table->dim() != 2 || table->size(1) != rope / 2 || table->dtype() != q.dtype() || !table->is_contiguous() ||
        table->size(0) < q.size(1))
      fail("mla_heads: the RoPE tables must be contiguous {} [P, {}] with P >= L = {}, got {} {}",
           dtype_name(q.dtype()), rope / 2, q.size(1), dtype_name(table->dtype()), shape_str(table->shape()));
}

// The heads' readers are GEMMs (attention's products; backward, the q and kv projections' weight and
// input gradients): under kBFloat16 each is rounded as it is written, a chunk of positions at a time
// while it is in cache (core/gemm.hpp, rounded_copy). Rounds elements [begin, end) of `values` into
// `rounded`, when given.
template <class T>
void round_range(const T* values, bfloat16* rounded, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>)
    if (rounded) float_to_bfloat16_here(values + begin, rounded + begin, end - begin);
}

}  // namespace

// One pass each way. Backward: dq = [dquery_nope, rope^-1(dquery_pe)], dkv = [dkey_nope, dvalue] and
// dk_pe = rope^-1(sum over heads of dkey_pe). Composing this from narrow, RoPE, expand and cat costs
// a copy per piece forward and, backward, a zero-padded full-size gradient per narrow plus the sums
// of those: several passes over [B, L, H, D] per layer instead of one.
MlaHeads mla_heads(const Tensor& q, const Tensor& kv, const Tensor& k_pe, const Tensor& cos, const Tensor& sin,
                   int64_t nope) {
  check_inputs(q, kv, k_pe, cos, sin, nope);
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), D = q.size(3), half = (D - nope) / 2,
                V = kv.size(3) - nope;
  const DType dtype = q.dtype();
  return dispatch_floating(dtype, "mla_heads", [&]<class T>() {
    const Tensor qc = contiguous_copy(q.detach()), kvc = contiguous_copy(kv.detach());
    const Tensor pe = contiguous_copy(k_pe.detach());
    Tensor query = Tensor::empty({B, L, H, D}, dtype), key = Tensor::empty({B, L, H, D}, dtype);
    const T *pq = qc.data<T>(), *pkv = kvc.data<T>(), *ppe = pe.data<T>(), *pc = cos.data<T>(), *ps = sin.data<T>();
    T *pquery = query.data<T>(), *pkey = key.data<T>();
    bfloat16 *query_rounded = rounded_copy(query), *key_rounded = rounded_copy(key);
    parallel_for(B * L, 64, [&](int64_t begin, int64_t end) {
      std::vector<T> rotated(static_cast<size_t>(2 * half));  // the shared k_pe, rotated once per position
      T* k_rot = rotated.data();
      for (int64_t bt = begin; bt < end; ++bt) {
        const int64_t t = bt % L;
        const T *c = pc + t * half, *s = ps + t * half;
        rotate_pairs(ppe + bt * 2 * half, k_rot, c, s, half, false);
        for (int64_t h = 0; h < H; ++h) {
          const T* qh = pq + (bt * H + h) * D;
          T *query_h = pquery + (bt * H + h) * D, *key_h = pkey + (bt * H + h) * D;
          std::copy_n(qh, nope, query_h);
          rotate_pairs(qh + nope, query_h + nope, c, s, half, false);
          std::copy_n(pkv + (bt * H + h) * (nope + V), nope, key_h);
          std::copy_n(k_rot, 2 * half, key_h + nope);
        }
      }
      round_range(pquery, query_rounded, begin * H * D, end * H * D);
      round_range(pkey, key_rounded, begin * H * D, end * H * D);
    });
    const Tensor value = kvc.as_strided({B, L, H, V}, {L * H * (nope + V), H * (nope + V), nope + V, 1}, nope);
    std::vector<Tensor> outs = autograd::record_multi(
        "mla_heads", {query, key, value}, {q, kv, k_pe}, {cos, sin},
        [cos, sin, B, L, H, D, V, nope, half](const std::vector<Tensor>& grads) -> std::vector<Tensor> {
          const DType dtype = cos.dtype();
          const Tensor dquery = grads[0].defined() ? contiguous_copy(grads[0]) : Tensor();
          const Tensor dkey = grads[1].defined() ? contiguous_copy(grads[1]) : Tensor();
          const Tensor dvalue = grads[2].defined() ? contiguous_copy(grads[2]) : Tensor();
          Tensor dq = Tensor::empty({B, L, H, D}, dtype), dkv = Tensor::empty({B, L, H, nope + V}, dtype),
                 dpe = Tensor::empty({B, L, 2 * half}, dtype);
          const T *pc = cos.data<T>(), *ps = sin.data<T>();
          const T* pdquery = dquery.defined() ? dquery.data<T>() : nullptr;
          const T* pdkey = dkey.defined() ? dkey.data<T>() : nullptr;
          const T* pdvalue = dvalue.defined() ? dvalue.data<T>() : nullptr;
          T *pdq = dq.data<T>(), *pdkv = dkv.data<T>(), *pdpe = dpe.data<T>();
          bfloat16 *dq_rounded = rounded_copy(dq), *dkv_rounded = rounded_copy(dkv);
          parallel_for(B * L, 64, [&](int64_t begin, int64_t end) {
            std::vector<T> pe_sum(static_cast<size_t>(2 * half));
            for (int64_t bt = begin; bt < end; ++bt) {
              const int64_t t = bt % L;
              const T *c = pc + t * half, *s = ps + t * half;
              std::fill(pe_sum.begin(), pe_sum.end(), T(0));
              for (int64_t h = 0; h < H; ++h) {
                const int64_t at = (bt * H + h) * D;
                T *dq_h = pdq + at, *dkv_h = pdkv + (bt * H + h) * (nope + V);
                if (pdquery) {
                  std::copy_n(pdquery + at, nope, dq_h);
                  rotate_pairs(pdquery + at + nope, dq_h + nope, c, s, half, true);
                } else {
                  std::fill_n(dq_h, D, T(0));
                }
                if (pdkey) {
                  std::copy_n(pdkey + at, nope, dkv_h);
                  for (int64_t i = 0; i < 2 * half; ++i) pe_sum[static_cast<size_t>(i)] += pdkey[at + nope + i];
                } else {
                  std::fill_n(dkv_h, nope, T(0));
                }
                if (pdvalue)
                  std::copy_n(pdvalue + (bt * H + h) * V, V, dkv_h + nope);
                else
                  std::fill_n(dkv_h + nope, V, T(0));
              }
              rotate_pairs(pe_sum.data(), pdpe + bt * 2 * half, c, s, half, true);
            }
            round_range(pdq, dq_rounded, begin * H * D, end * H * D);
            round_range(pdkv, dkv_rounded, begin * H * (nope + V), end * H * (nope + V));
          });
          return {dq, dkv, dpe};
        });
    return MlaHeads{outs[0], outs[1], outs[2]};
  });
}

}  // namespace latent

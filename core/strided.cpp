// Layout and dtype conversion kernels.
#include "strided.hpp"

#include <algorithm>
#include <cstring>

#include "parallel.hpp"

namespace latent {
namespace {

constexpr int64_t kCopyGrain = 1 << 15;  // elements per task: below this, threads cost more than they save
constexpr int64_t kTile = 16;            // transposing copies move kTile x kTile blocks

// A transposing copy: the destination's last dim is contiguous but the source's unit-stride dim is
// another one (k). Walking rows would read one element per cache line; instead copy kTile x kTile
// tiles over dims (k, last), so the reads of a tile share their cache lines. Returns false (and
// does nothing) for other layouts.
template <class D, class S> bool copy_transposed(const Tensor& dst, const Tensor& src) {
  const int64_t nd = dst.dim(), last = nd - 1;
  if (nd < 2) return false;
  const Shape &shape = dst.shape(), &ds = dst.strides(), &ss = src.strides();
  if (ds[last] != 1 || ss[last] == 1 || ss[last] == 0 || shape[last] < 2) return false;
  int64_t k = -1;
  for (int64_t d = 0; d < last; ++d)
    if (ss[d] == 1 && shape[d] > 1) k = d;
  if (k < 0) return false;
  Shape outer_shape, outer_ds, outer_ss;  // every dim but k and last
  for (int64_t d = 0; d < last; ++d) {
    if (d == k) continue;
    outer_shape.push_back(shape[d]);
    outer_ds.push_back(ds[d]);
    outer_ss.push_back(ss[d]);
  }
  const int64_t rows = shape[k], cols = shape[last], row_stride = ds[k], col_stride = ss[last];
  const int64_t tiles = (rows + kTile - 1) / kTile, units = shape_numel(outer_shape) * tiles;
  D* out = dst.data<D>();
  const S* in = src.data<S>();
  parallel_for(units, std::max<int64_t>(1, kCopyGrain / (kTile * cols)), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      int64_t to = 0, from = 0, rest = u / tiles;
      for (size_t d = outer_shape.size(); d-- > 0;) {
        const int64_t index = rest % outer_shape[d];
        rest /= outer_shape[d];
        to += index * outer_ds[d];
        from += index * outer_ss[d];
      }
      const int64_t i0 = (u % tiles) * kTile, i1 = std::min(rows, i0 + kTile);
      for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
        const int64_t j1 = std::min(cols, j0 + kTile);
        for (int64_t i = i0; i < i1; ++i) {
          D* out_row = out + to + i * row_stride;
          const S* in_column = in + from + i;
          for (int64_t j = j0; j < j1; ++j) out_row[j] = convert_element<D>(in_column[j * col_stride]);
        }
      }
    }
  });
  return true;
}

}  // namespace

void copy_into(const Tensor& dst, const Tensor& src) {
  if (dst.numel() == 0) return;
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    const size_t width = dtype_size(dst.dtype());
    char* out = static_cast<char*>(dst.raw_data());
    const char* in = static_cast<const char*>(src.raw_data());
    parallel_for(dst.numel(), kCopyGrain, [&](int64_t b, int64_t e) {
      std::memcpy(out + b * width, in + b * width, static_cast<size_t>(e - b) * width);
    });
    return;
  }
  if (dst.is_contiguous() && src.is_contiguous()) {  // the GEMM operands and .to(): vectorised
    if (dst.dtype() == kBFloat16 && src.dtype() == kFloat32)
      return float_to_bfloat16(src.data<float>(), dst.data<bfloat16>(), dst.numel());
    if (dst.dtype() == kFloat32 && src.dtype() == kBFloat16)
      return bfloat16_to_float(src.data<bfloat16>(), dst.data<float>(), dst.numel());
  }
  dispatch_with_bfloat16(dst.dtype(), [&]<class D>() {
    dispatch_with_bfloat16(src.dtype(), [&]<class S>() {
      if (copy_transposed<D, S>(dst, src)) return;
      // Walk both layouts together, rows split across the pool (each element is written once).
      const Shape& shape = dst.shape();
      const int64_t inner = shape.empty() ? 1 : shape.back();
      const int64_t inner_dst = shape.empty() ? 0 : dst.strides().back();
      const int64_t inner_src = shape.empty() ? 0 : src.strides().back();
      D* out = dst.data<D>();
      const S* in = src.data<S>();
      parallel_for(row_count(shape), std::max<int64_t>(1, kCopyGrain / inner), [&](int64_t b, int64_t e) {
        for_each_row2(shape, dst.strides(), src.strides(), b, e, [&](int64_t, int64_t to, int64_t from) {
          if constexpr (std::is_same_v<D, bfloat16> && std::is_same_v<S, float>)
            if (inner_dst == 1 && inner_src == 1)  // a strided GEMM operand (attention's v): vectorised rows
              return float_to_bfloat16_here(in + from, out + to, inner);
          if (inner_dst == 1 && inner_src == 1) {
            for (int64_t i = 0; i < inner; ++i) out[to + i] = convert_element<D>(in[from + i]);
          } else {
            for (int64_t i = 0; i < inner; ++i) out[to + i * inner_dst] = convert_element<D>(in[from + i * inner_src]);
          }
        });
      });
    });
  });
}

Tensor contiguous_copy(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  copy_into(out, t);
  return out;
}

Tensor cast_copy(const Tensor& t, DType dtype) {
  Tensor out = Tensor::empty(t.shape(), dtype);
  copy_into(out, t);
  return out;
}

}  // namespace latent

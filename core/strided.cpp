// Layout and dtype conversion kernels.
#include "strided.hpp"

#include <cstring>

namespace latent {

void copy_into(const Tensor& dst, const Tensor& src) {
  if (dst.numel() == 0) return;
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    std::memcpy(dst.raw_data(), src.raw_data(), static_cast<size_t>(dst.numel()) * dtype_size(dst.dtype()));
    return;
  }
  dispatch(dst.dtype(), [&]<class D>() {
    dispatch(src.dtype(), [&]<class S>() {
      D* out = dst.data<D>();
      const S* in = src.data<S>();
      if (dst.is_contiguous()) {
        int64_t i = 0;
        for_each_offset(src, [&](int64_t off) { out[i++] = static_cast<D>(in[off]); });
      } else {
        std::vector<int64_t> src_offsets;
        src_offsets.reserve(static_cast<size_t>(src.numel()));
        for_each_offset(src, [&](int64_t off) { src_offsets.push_back(off); });
        size_t i = 0;
        for_each_offset(dst, [&](int64_t off) { out[off] = static_cast<D>(in[src_offsets[i++]]); });
      }
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

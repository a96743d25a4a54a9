// Broadcast geometry for the elementwise kernels.
#include "elementwise.hpp"

#include <algorithm>

namespace latent {

Shape broadcast_strides(const Tensor& t, const Shape& out) {
  Shape strides(out.size(), 0);
  const size_t lead = out.size() - t.shape().size();
  for (size_t d = 0; d < t.shape().size(); ++d)
    strides[lead + d] = t.shape()[d] == 1 ? 0 : t.strides()[d];
  return strides;
}

bool repeats_as_rows(const Tensor& b, const Shape& shape) {
  if (!b.is_contiguous() || b.numel() == 0) return false;
  size_t first = 0;  // b's shape without leading 1s must be the trailing dims of shape
  while (first < b.shape().size() && b.shape()[first] == 1) ++first;
  const size_t rest = b.shape().size() - first;
  if (rest > shape.size()) return false;
  return std::equal(b.shape().begin() + static_cast<std::ptrdiff_t>(first), b.shape().end(),
                    shape.end() - static_cast<std::ptrdiff_t>(rest));
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype())
    fail("{}: dtype mismatch, {} {} and {} {}", op, dtype_name(a.dtype()), shape_str(a.shape()), dtype_name(b.dtype()),
         shape_str(b.shape()));
}

}  // namespace latent

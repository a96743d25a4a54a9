// Tensor::to_string: nested brackets, at most 3 leading and 3 trailing entries per dimension when
// a tensor has more than 1000 elements.
#include <fmt/format.h>

#include "format.hpp"
#include "strided.hpp"

namespace latent {
namespace {

constexpr int64_t kElideAbove = 1000, kEdgeItems = 3;

template <class T> std::string format_element(T value) {
  if constexpr (std::is_integral_v<T>) return fmt::format("{}", value);
  else return fmt::format("{:.6g}", convert_element<double>(value));
}

template <class T>
void print_dim(std::string& out, const T* data, const Tensor& t, int64_t d, int64_t offset, bool elide, int indent) {
  const int64_t n = t.shape()[d];
  out += '[';
  for (int64_t i = 0; i < n; ++i) {
    if (elide && n > 2 * kEdgeItems && i == kEdgeItems) {
      out += d + 1 == t.dim() ? "..., " : "...,\n" + std::string(indent + 1, ' ');
      i = n - kEdgeItems - 1;
      continue;
    }
    const int64_t off = offset + i * t.strides()[d];
    if (d + 1 == t.dim()) {
      out += format_element(data[off]);
    } else {
      print_dim(out, data, t, d + 1, off, elide, indent + 1);
    }
    if (i + 1 < n) out += d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' ');
  }
  out += ']';
}

}  // namespace

std::string Tensor::to_string() const {
  std::string out = "tensor(";
  dispatch_with_bfloat16(dtype(), [&]<class T>() {
    const T* p = data<T>();
    if (dim() == 0) {
      out += format_element(*p);
    } else {
      print_dim(out, p, *this, 0, 0, numel() > kElideAbove, 7);
    }
  });
  return out + fmt::format(", shape={}, dtype={}{})", shape_str(shape()), dtype_name(dtype()),
                           requires_grad() ? ", requires_grad" : "");
}

}  // namespace latent

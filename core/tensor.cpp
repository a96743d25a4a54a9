// Tensor handle basics: geometry queries, typed access, copies between layouts and dtypes.
#include "tensor.hpp"

#include <algorithm>
#include <cstring>

#include "parallel.hpp"
#include "strided.hpp"

namespace latent {

TensorImpl& Tensor::impl() const {
  if (!impl_) fail("tensor: use of an undefined tensor");
  return *impl_;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string index_str(int64_t flat, const Shape& shape) {
  Shape index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(index);
}

int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  if (dim < lo || dim > hi)
    fail("{}: dim {} out of range for a tensor with {} dims", op, dim, ndim);
  return dim < 0 ? dim + std::max<int64_t>(ndim, 1) : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      fail("{}: shapes {} and {} cannot be broadcast", op, shape_str(a), shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t s : shape)
    if (s < 0) fail("empty: negative size in shape {}", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

int64_t Tensor::numel() const { return shape_numel(shape()); }

int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[normalize_dim(d, dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape().size(); i-- > 0;) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

bool Tensor::shares_storage(const Tensor& other) const {
  return defined() && other.defined() && storage() == other.storage();
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl().storage->data()) + impl().offset * static_cast<int64_t>(dtype_size(dtype()));
}

template <class T> std::vector<T> Tensor::to_vector() const {
  // bfloat16 widens exactly, so a float vector is its natural host form.
  const Tensor c = std::is_same_v<T, float> && dtype() == kBFloat16 ? cast_copy(*this, kFloat32) : contiguous_copy(*this);
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<bfloat16> Tensor::to_vector<bfloat16>() const;

double Tensor::item() const {
  if (numel() != 1)
    fail("item: expected a one-element tensor, got shape {}", shape_str(shape()));
  return dispatch_with_bfloat16(dtype(), [&]<class T>() { return convert_element<double>(*data<T>()); });
}

Tensor Tensor::as_strided(const Shape& new_shape, const Shape& new_strides, int64_t new_offset) const {
  if (new_shape.size() != new_strides.size())
    fail("as_strided: shape {} and strides {} differ in rank", shape_str(new_shape), shape_str(new_strides));
  int64_t lo = new_offset, hi = new_offset;
  for (size_t i = 0; i < new_shape.size(); ++i) {
    if (new_shape[i] < 0) fail("as_strided: negative size in {}", shape_str(new_shape));
    if (new_shape[i] == 0) { lo = 0; hi = -1; break; }
    const int64_t span = (new_shape[i] - 1) * new_strides[i];
    (span < 0 ? lo : hi) += span;
  }
  const int64_t capacity = static_cast<int64_t>(storage()->nbytes() / dtype_size(dtype()));
  if (hi >= lo && (lo < 0 || hi >= capacity))
    fail("as_strided: view {} outside its storage of {} elements", shape_str(new_shape), capacity);
  auto view = std::make_shared<TensorImpl>();
  view->storage = storage();
  view->shape = new_shape;
  view->strides = new_strides;
  view->offset = new_offset;
  view->dtype = dtype();
  return Tensor(std::move(view));
}

Tensor& Tensor::copy_(const Tensor& src) {
  if (src.shape() != shape())
    fail("copy_: source shape {} differs from destination {}", shape_str(src.shape()), shape_str(shape()));
  copy_into(*this, src);
  bump_version();
  return *this;
}

Tensor& Tensor::fill_(double value) {
  dispatch_with_bfloat16(dtype(), [&]<class T>() {
    const T v = convert_element<T>(value);
    T* p = data<T>();
    if (is_contiguous())  // zeros() and friends: the common case, split across the pool
      parallel_for(numel(), 1 << 15, [&](int64_t b, int64_t e) { std::fill(p + b, p + e, v); });
    else
      for_each_offset(*this, [&](int64_t off) { p[off] = v; });
  });
  bump_version();
  return *this;
}

}  // namespace latent

// Tensor: a cheap, shared handle to typed, strided data (shape, strides, offset over a Storage),
// plus the autograd slots (requires_grad, grad, the node that produced it).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtype.hpp"
#include "error.hpp"
#include "storage.hpp"

namespace latent {

using Shape = std::vector<int64_t>;

namespace autograd {
class Node;
}

// Everything a Tensor handle points at. Views share `storage`; autograd fields are per handle-impl.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape, strides;  // strides in elements
  int64_t offset = 0;    // in elements
  DType dtype = DType::Float32;

  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;            // accumulated gradient of a leaf
  std::shared_ptr<autograd::Node> grad_fn;     // the op that produced this tensor (null for leaves)
  int output_nr = 0;                           // which output of grad_fn this is
  std::weak_ptr<autograd::Node> grad_accumulator;  // the leaf's accumulation node, while a graph uses it
};

class Tensor {
 public:
  Tensor() = default;  // undefined
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  static Tensor empty(const Shape& shape, DType dtype = kFloat32);  // uninitialised, contiguous

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t numel() const;
  DType dtype() const { return impl().dtype; }
  int64_t size(int64_t d) const;      // negative d counts from the end
  int64_t stride(int64_t d) const;
  bool is_contiguous() const;
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }
  bool shares_storage(const Tensor& other) const;

  // Typed access to the first element (storage + offset). T must match dtype().
  template <class T> T* data() const;
  void* raw_data() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }

  template <class T> std::vector<T> to_vector() const;  // row-major copy; T matches dtype(), or float for bfloat16
  double item() const;                                  // one-element tensors only
  Tensor contiguous() const;                            // self if already contiguous
  Tensor clone() const;                                 // differentiable copy
  Tensor to(DType dtype) const;                         // differentiable between float types
  // A view with explicit geometry over the same storage; no autograd. Bounds are checked.
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;
  // In-place, no autograd: used by optimizers and initialisers on leaves. Each bumps the version.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  // The count of in-place writes to this tensor's storage, shared with every view of it. Code that
  // writes through data<T>() into a tensor others may have seen (an optimizer step) calls
  // bump_version(); a backward that saved the old values then refuses instead of using the new ones.
  uint64_t version() const { return impl().storage->version(); }
  void bump_version() const { impl().storage->bump_version(); }

  // Differentiable views and shape ops (defined in autograd/).
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const;  // like reshape, but never copies (error if it would have to)
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor expand(const Shape& shape) const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

  // Autograd (defined in autograd/).
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& requires_grad_(bool on = true);
  Tensor grad() const;                        // undefined until a backward reaches it
  void set_grad(const Tensor& grad) const;    // replace (or clear, with an undefined tensor) the gradient
  Tensor detach() const;                      // same data, no history
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  void backward(bool retain_graph = false) const;  // one-element tensor, seed 1
  void backward(const Tensor& grad_output, bool retain_graph = false) const;

  std::string to_string() const;  // shape, dtype and values (elided when large)
  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Strides of a contiguous (row-major) tensor of `shape`.
Shape contiguous_strides(const Shape& shape);
int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);                 // "[2, 3]"
std::string index_str(int64_t flat, const Shape& shape);   // flat position -> "[0, 5]" (row-major)
int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op);  // negative dims, range-checked
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

template <class T> T* Tensor::data() const {
  if (dtype_of<T>() != dtype())
    fail("data: tensor is {}, requested {}", dtype_name(dtype()), dtype_name(dtype_of<T>()));
  return static_cast<T*>(impl().storage->data()) + impl().offset;
}

}  // namespace latent

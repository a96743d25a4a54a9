// Views share storage and pass gradients back through the inverse view; cat/split are each
// other's backward.
#include "shape_ops.hpp"

#include <numeric>

#include "../core/factory.hpp"
#include "../core/strided.hpp"
#include "elementwise.hpp"
#include "node.hpp"

namespace latent {
namespace {

using autograd::record;

// Resolves one -1 and checks the element count.
Shape infer_shape(Shape shape, int64_t numel, const char* op, const Shape& from) {
  int64_t known = 1, unknown = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (unknown >= 0) fail("{}: more than one -1 in {}", op, shape_str(shape));
      unknown = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      fail("{}: negative size in {}", op, shape_str(shape));
    } else {
      known *= shape[i];
    }
  }
  if (unknown >= 0 && known != 0 && numel % known == 0) shape[static_cast<size_t>(unknown)] = numel / known;
  if (shape_numel(shape) != numel || (unknown >= 0 && known == 0))
    fail("{}: cannot reshape {} ({} elements) to {}", op, shape_str(from), numel, shape_str(shape));
  return shape;
}

// Strides that view x's data as `shape` without copying, if any exist (the rule torch.view uses:
// each run of merged/split dims must be contiguous within itself).
bool view_strides(const Tensor& x, const Shape& shape, Shape& strides) {
  if (x.is_contiguous()) { strides = contiguous_strides(shape); return true; }
  const Shape& old_shape = x.shape();
  const Shape& old_strides = x.strides();
  strides.assign(shape.size(), 0);
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.empty() ? 1 : old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old_shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= old_shape[static_cast<size_t>(d)];
    if (d == 0 || (old_shape[static_cast<size_t>(d - 1)] != 1 &&
                   old_strides[static_cast<size_t>(d - 1)] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[static_cast<size_t>(view_d)] == 1)) {
        strides[static_cast<size_t>(view_d)] = view_numel * chunk_base_stride;
        view_numel *= shape[static_cast<size_t>(view_d)];
        --view_d;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = old_strides[static_cast<size_t>(d - 1)];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

template <class Backward>
Tensor view_of(const Tensor& x, const Shape& shape, const Shape& strides, int64_t offset, const char* op,
               Backward&& backward) {
  return record(op, x.as_strided(shape, strides, offset), {x}, std::forward<Backward>(backward));
}

}  // namespace

Tensor view(const Tensor& x, const Shape& requested) {
  const Shape shape = infer_shape(requested, x.numel(), "view", x.shape());
  Shape strides;
  if (!view_strides(x, shape, strides))
    fail("view: {} with strides {} cannot be viewed as {}; use reshape", shape_str(x.shape()), shape_str(x.strides()),
         shape_str(shape));
  return view_of(x, shape, strides, x.offset(), "view",
                 [from = x.shape()](const Tensor& g) -> std::vector<Tensor> { return {reshape(g, from)}; });
}

Tensor reshape(const Tensor& x, const Shape& requested) {
  const Shape shape = infer_shape(requested, x.numel(), "reshape", x.shape());
  Shape strides;
  if (view_strides(x, shape, strides)) return view(x, shape);
  return view(contiguous(x), shape);
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  d0 = normalize_dim(d0, x.dim(), "transpose");
  d1 = normalize_dim(d1, x.dim(), "transpose");
  std::vector<int64_t> order(static_cast<size_t>(x.dim()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[static_cast<size_t>(d0)], order[static_cast<size_t>(d1)]);
  return permute(x, order);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& order) {
  if (static_cast<int64_t>(order.size()) != x.dim())
    fail("permute: order of {} dims for a tensor of shape {}", order.size(), shape_str(x.shape()));
  Shape shape(order.size()), strides(order.size());
  std::vector<int64_t> inverse(order.size(), -1);
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t d = normalize_dim(order[i], x.dim(), "permute");
    if (inverse[static_cast<size_t>(d)] != -1) fail("permute: dim {} repeated", d);
    inverse[static_cast<size_t>(d)] = static_cast<int64_t>(i);
    shape[i] = x.shape()[static_cast<size_t>(d)];
    strides[i] = x.strides()[static_cast<size_t>(d)];
  }
  return view_of(x, shape, strides, x.offset(), "permute",
                 [inverse](const Tensor& g) -> std::vector<Tensor> { return {permute(g, inverse)}; });
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  dim = normalize_dim(dim, x.dim(), "narrow");
  const int64_t size = x.shape()[static_cast<size_t>(dim)];
  if (start < 0) start += size;
  if (start < 0 || length < 0 || start + length > size)
    fail("narrow: [{}, {}) out of range for dim {} of {}", start, start + length, dim, shape_str(x.shape()));
  Shape shape = x.shape();
  shape[static_cast<size_t>(dim)] = length;
  return view_of(x, shape, x.strides(), x.offset() + start * x.strides()[static_cast<size_t>(dim)], "narrow",
                 [from = x.shape(), dim, start, length](const Tensor& g) -> std::vector<Tensor> {
                   // Pad the slice's gradient back to the full dim with zeros.
                   std::vector<Tensor> parts;
                   Shape before = from, after = from;
                   before[static_cast<size_t>(dim)] = start;
                   after[static_cast<size_t>(dim)] = from[static_cast<size_t>(dim)] - start - length;
                   if (start > 0) parts.push_back(zeros(before, g.dtype()));
                   parts.push_back(g);
                   if (after[static_cast<size_t>(dim)] > 0) parts.push_back(zeros(after, g.dtype()));
                   return {parts.size() == 1 ? g : cat(parts, dim)};
                 });
}

Tensor expand(const Tensor& x, const Shape& requested) {
  if (requested.size() < x.shape().size())
    fail("expand: cannot expand {} to fewer dims {}", shape_str(x.shape()), shape_str(requested));
  const size_t lead = requested.size() - x.shape().size();
  Shape shape(requested.size()), strides(requested.size(), 0);
  for (size_t d = 0; d < requested.size(); ++d) {
    if (d < lead) {
      if (requested[d] < 0) fail("expand: -1 not allowed for new leading dim in {}", shape_str(requested));
      shape[d] = requested[d];
      continue;
    }
    const int64_t have = x.shape()[d - lead];
    const int64_t want = requested[d] == -1 ? have : requested[d];
    if (want < 0 || (have != want && have != 1))
      fail("expand: cannot expand {} to {}", shape_str(x.shape()), shape_str(requested));
    shape[d] = want;
    strides[d] = have == want ? x.strides()[d - lead] : 0;
  }
  if (shape == x.shape()) return x;
  return view_of(x, shape, strides, x.offset(), "expand",
                 [from = x.shape()](const Tensor& g) -> std::vector<Tensor> { return {sum_to(g, from)}; });
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  dim = normalize_dim(dim, x.dim(), "squeeze");
  if (x.dim() == 0 || x.shape()[static_cast<size_t>(dim)] != 1) return x;
  Shape shape = x.shape(), strides = x.strides();
  shape.erase(shape.begin() + dim);
  strides.erase(strides.begin() + dim);
  return view_of(x, shape, strides, x.offset(), "squeeze",
                 [from = x.shape()](const Tensor& g) -> std::vector<Tensor> { return {reshape(g, from)}; });
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  dim = normalize_dim(dim, x.dim() + 1, "unsqueeze");
  Shape shape = x.shape(), strides = x.strides();
  const int64_t stride = dim < x.dim() ? x.strides()[static_cast<size_t>(dim)] * x.shape()[static_cast<size_t>(dim)] : 1;
  shape.insert(shape.begin() + dim, 1);
  strides.insert(strides.begin() + dim, stride);
  return view_of(x, shape, strides, x.offset(), "unsqueeze",
                 [from = x.shape()](const Tensor& g) -> std::vector<Tensor> { return {reshape(g, from)}; });
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  start_dim = normalize_dim(start_dim, x.dim(), "flatten");
  end_dim = normalize_dim(end_dim, x.dim(), "flatten");
  if (start_dim > end_dim) fail("flatten: start_dim after end_dim");
  Shape shape(x.shape().begin(), x.shape().begin() + start_dim);
  int64_t merged = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) merged *= x.shape()[static_cast<size_t>(d)];
  shape.push_back(merged);
  shape.insert(shape.end(), x.shape().begin() + end_dim + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor contiguous(const Tensor& x) { return x.is_contiguous() ? x : clone(x); }

Tensor clone(const Tensor& x) {
  return record("clone", cast_copy(x, x.dtype()), {x}, [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
}

Tensor to(const Tensor& x, DType dtype) {
  if (dtype == x.dtype()) return x;
  Tensor out = cast_copy(x, dtype);
  if (!is_floating(dtype)) return out;
  return record("to", out, {x}, [from = x.dtype()](const Tensor& g) -> std::vector<Tensor> { return {to(g, from)}; });
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) fail("cat: no tensors");
  const Tensor& first = xs[0];
  if (first.dim() == 0) fail("cat: 0-dim tensors cannot be concatenated; use stack");
  dim = normalize_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  shape[static_cast<size_t>(dim)] = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) {
    if (x.dim() != first.dim() || x.dtype() != first.dtype())
      fail("cat: tensors {} {} and {} {} differ in rank or dtype", shape_str(first.shape()), dtype_name(first.dtype()),
           shape_str(x.shape()), dtype_name(x.dtype()));
    for (int64_t d = 0; d < x.dim(); ++d)
      if (d != dim && x.shape()[static_cast<size_t>(d)] != first.shape()[static_cast<size_t>(d)])
        fail("cat: shapes {} and {} differ outside dim {}", shape_str(first.shape()), shape_str(x.shape()), dim);
    sizes.push_back(x.shape()[static_cast<size_t>(dim)]);
    shape[static_cast<size_t>(dim)] += sizes.back();
  }
  Tensor out = Tensor::empty(shape, first.dtype());
  int64_t start = 0;
  for (const Tensor& x : xs) {
    const int64_t n = x.shape()[static_cast<size_t>(dim)];
    Shape part = shape;
    part[static_cast<size_t>(dim)] = n;
    copy_into(out.as_strided(part, out.strides(), start * out.strides()[static_cast<size_t>(dim)]), x);
    start += n;
  }
  return autograd::record_multi("cat", {out}, xs, [sizes, dim](const std::vector<Tensor>& g) {
    return split(g[0], sizes, dim);
  })[0];
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) fail("stack: no tensors");
  dim = normalize_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> expanded;
  for (const Tensor& x : xs) {
    if (x.shape() != xs[0].shape())
      fail("stack: shapes {} and {} differ", shape_str(xs[0].shape()), shape_str(x.shape()));
    expanded.push_back(unsqueeze(x, dim));
  }
  return cat(expanded, dim);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = normalize_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) fail("split: negative size");
    total += s;
  }
  if (total != x.shape()[static_cast<size_t>(dim)])
    fail("split: sizes add up to {}, dim {} of {} has {}", total, dim, shape_str(x.shape()),
         x.shape()[static_cast<size_t>(dim)]);
  std::vector<Tensor> parts;
  int64_t start = 0;
  for (int64_t s : sizes) {
    parts.push_back(narrow(x, dim, start, s));
    start += s;
  }
  return parts;
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  if (split_size <= 0) fail("split: split_size must be positive, got {}", split_size);
  const int64_t n = x.size(dim);
  std::vector<int64_t> sizes;
  for (int64_t s = 0; s < n; s += split_size) sizes.push_back(std::min(split_size, n - s));
  if (sizes.empty()) sizes.push_back(0);
  return split(x, sizes, dim);
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  if (chunks <= 0) fail("chunk: chunks must be positive, got {}", chunks);
  const int64_t n = x.size(dim);
  return split(x, std::max<int64_t>(1, (n + chunks - 1) / chunks), dim);
}

// Tensor's member forms.
Tensor Tensor::reshape(const Shape& s) const { return latent::reshape(*this, s); }
Tensor Tensor::view(const Shape& s) const { return latent::view(*this, s); }
Tensor Tensor::transpose(int64_t d0, int64_t d1) const { return latent::transpose(*this, d0, d1); }
Tensor Tensor::permute(const std::vector<int64_t>& order) const { return latent::permute(*this, order); }
Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const { return latent::narrow(*this, d, start, length); }
Tensor Tensor::expand(const Shape& s) const { return latent::expand(*this, s); }
Tensor Tensor::squeeze(int64_t d) const { return latent::squeeze(*this, d); }
Tensor Tensor::unsqueeze(int64_t d) const { return latent::unsqueeze(*this, d); }
Tensor Tensor::flatten(int64_t s, int64_t e) const { return latent::flatten(*this, s, e); }
Tensor Tensor::contiguous() const { return latent::contiguous(*this); }
Tensor Tensor::clone() const { return latent::clone(*this); }
Tensor Tensor::to(DType d) const { return latent::to(*this, d); }

}  // namespace latent

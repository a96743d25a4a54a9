// Indexing ops. gather/scatter_add are each other's backward, as are index_select/index_add.
#include "index_ops.hpp"

#include "../core/factory.hpp"
#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "node.hpp"
#include "shape_ops.hpp"

namespace latent {
namespace {

using autograd::record;

void check_index(const Tensor& index, const char* op) {
  if (index.dtype() != kInt64) fail("{}: index must be int64, got {}", op, dtype_name(index.dtype()));
}

// Row-major coordinates of a contiguous tensor, passed to fn(flat, coord).
template <class Fn> void for_each_coord(const Shape& shape, Fn&& fn) {
  const int64_t n = shape_numel(shape);
  std::vector<int64_t> coord(shape.size(), 0);
  for (int64_t flat = 0; flat < n; ++flat) {
    fn(flat, coord);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++coord[d] < shape[d]) break;
      coord[d] = 0;
    }
  }
}

int64_t checked_id(int64_t id, int64_t size, const char* op) {
  if (id < -size || id >= size) fail("{}: index {} out of range [0, {})", op, id, size);
  return id < 0 ? id + size : id;
}

// Shared by gather and scatter_add: for each element of index, the offset in x (along dim) and in src.
void check_gather_shapes(const Tensor& x, int64_t dim, const Tensor& index, const char* op) {
  if (index.dim() != x.dim())
    fail("{}: index {} and input {} differ in rank", op, shape_str(index.shape()), shape_str(x.shape()));
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != dim && index.shape()[static_cast<size_t>(d)] > x.shape()[static_cast<size_t>(d)])
      fail("{}: index {} larger than input {} in dim {}", op, shape_str(index.shape()), shape_str(x.shape()), d);
}

}  // namespace

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_index(index, "gather");
  dim = normalize_dim(dim, x.dim(), "gather");
  check_gather_shapes(x, dim, index, "gather");
  const Tensor idx = contiguous_copy(index);
  Tensor out = Tensor::empty(index.shape(), x.dtype());
  dispatch(x.dtype(), [&]<class T>() {
    const T* px = x.data<T>();
    const int64_t* pi = idx.data<int64_t>();
    T* po = out.data<T>();
    const int64_t size = x.shape()[static_cast<size_t>(dim)];
    for_each_coord(index.shape(), [&](int64_t flat, const std::vector<int64_t>& coord) {
      int64_t off = 0;
      for (size_t d = 0; d < coord.size(); ++d)
        off += (static_cast<int64_t>(d) == dim ? checked_id(pi[flat], size, "gather") : coord[d]) * x.strides()[d];
      po[flat] = px[off];
    });
  });
  return record("gather", out, {x}, {idx}, [shape = x.shape(), dim, idx](const Tensor& g) -> std::vector<Tensor> {
    return {scatter_add(zeros(shape, g.dtype()), dim, idx, g)};
  });
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  check_index(index, "scatter_add");
  dim = normalize_dim(dim, x.dim(), "scatter_add");
  check_gather_shapes(x, dim, index, "scatter_add");
  if (src.dtype() != x.dtype())
    fail("scatter_add: src dtype {} differs from {}", dtype_name(src.dtype()), dtype_name(x.dtype()));
  for (int64_t d = 0; d < x.dim(); ++d)
    if (src.dim() != x.dim() || index.shape()[static_cast<size_t>(d)] > src.shape()[static_cast<size_t>(d)])
      fail("scatter_add: index {} larger than src {}", shape_str(index.shape()), shape_str(src.shape()));
  const Tensor idx = contiguous_copy(index);
  Tensor out = cast_copy(x, x.dtype());
  dispatch(x.dtype(), [&]<class T>() {
    const T* ps = src.data<T>();
    const int64_t* pi = idx.data<int64_t>();
    T* po = out.data<T>();
    const int64_t size = x.shape()[static_cast<size_t>(dim)];
    for_each_coord(index.shape(), [&](int64_t flat, const std::vector<int64_t>& coord) {
      int64_t off = 0, soff = 0;
      for (size_t d = 0; d < coord.size(); ++d) {
        off += (static_cast<int64_t>(d) == dim ? checked_id(pi[flat], size, "scatter_add") : coord[d]) * out.strides()[d];
        soff += coord[d] * src.strides()[d];
      }
      po[off] += ps[soff];
    });
  });
  return record("scatter_add", out, {x, src}, {idx}, [dim, idx, src_shape = src.shape()](const Tensor& g) -> std::vector<Tensor> {
    Tensor gs = gather(g, dim, idx);
    if (gs.shape() != src_shape) {  // src may be larger than index: its extra elements get no gradient
      Tensor padded = zeros(src_shape, g.dtype());
      copy_into(padded.as_strided(gs.shape(), padded.strides(), 0), gs);
      gs = padded;
    }
    return {g, gs};
  });
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_index(index, "index_select");
  if (index.dim() != 1) fail("index_select: index must be 1-D, got {}", shape_str(index.shape()));
  dim = normalize_dim(dim, x.dim(), "index_select");
  const Tensor xc = contiguous_copy(x.detach()), idx = contiguous_copy(index);
  const int64_t size = x.shape()[static_cast<size_t>(dim)], n = index.numel();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= x.shape()[static_cast<size_t>(d)];
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.shape()[static_cast<size_t>(d)];
  Shape shape = x.shape();
  shape[static_cast<size_t>(dim)] = n;
  Tensor out = Tensor::empty(shape, x.dtype());
  const int64_t* pi = idx.data<int64_t>();
  for (int64_t j = 0; j < n; ++j) checked_id(pi[j], size, "index_select");
  dispatch(x.dtype(), [&]<class T>() {
    const T* px = xc.data<T>();
    T* po = out.data<T>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < n; ++j) {
        const int64_t id = pi[j] < 0 ? pi[j] + size : pi[j];
        std::copy_n(px + (o * size + id) * inner, inner, po + (o * n + j) * inner);
      }
  });
  return record("index_select", out, {x}, {idx}, [shape = x.shape(), dim, idx](const Tensor& g) -> std::vector<Tensor> {
    return {index_add(zeros(shape, g.dtype()), dim, idx, g)};
  });
}

Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  check_index(index, "index_add");
  if (index.dim() != 1) fail("index_add: index must be 1-D, got {}", shape_str(index.shape()));
  dim = normalize_dim(dim, x.dim(), "index_add");
  Shape expected = x.shape();
  expected[static_cast<size_t>(dim)] = index.numel();
  if (src.shape() != expected) fail("index_add: src {} should be {}", shape_str(src.shape()), shape_str(expected));
  if (src.dtype() != x.dtype())
    fail("index_add: src dtype {} differs from {}", dtype_name(src.dtype()), dtype_name(x.dtype()));
  const Tensor sc = contiguous_copy(src.detach()), idx = contiguous_copy(index);
  Tensor out = cast_copy(x, x.dtype());
  const int64_t size = x.shape()[static_cast<size_t>(dim)], n = index.numel();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= x.shape()[static_cast<size_t>(d)];
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.shape()[static_cast<size_t>(d)];
  const int64_t* pi = idx.data<int64_t>();
  for (int64_t j = 0; j < n; ++j) checked_id(pi[j], size, "index_add");
  dispatch(x.dtype(), [&]<class T>() {
    const T* ps = sc.data<T>();
    T* po = out.data<T>();
    parallel_for(inner, 4096, [&](int64_t b, int64_t e) {  // columns are independent; rows keep their order
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < n; ++j) {
          const int64_t id = pi[j] < 0 ? pi[j] + size : pi[j];
          T* dst = po + (o * size + id) * inner;
          const T* s = ps + (o * n + j) * inner;
          for (int64_t i = b; i < e; ++i) dst[i] += s[i];
        }
    });
  });
  return record("index_add", out, {x, src}, {idx}, [dim, idx](const Tensor& g) -> std::vector<Tensor> {
    return {g, index_select(g, dim, idx)};
  });
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  if (weight.dim() != 2) fail("embedding: weight must be [num_embeddings, dim], got {}", shape_str(weight.shape()));
  check_index(ids, "embedding");
  const Tensor flat = reshape(ids.detach(), {-1});
  const int64_t vocab = weight.size(0);
  const Tensor flat_ids = contiguous_copy(flat);
  const int64_t* p = flat_ids.data<int64_t>();
  for (int64_t i = 0; i < flat.numel(); ++i)
    if (p[i] < 0 || p[i] >= vocab) fail("embedding: id {} out of range [0, {})", p[i], vocab);
  Shape shape = ids.shape();
  shape.push_back(weight.size(1));
  return reshape(index_select(weight, 0, flat), shape);
}

}  // namespace latent

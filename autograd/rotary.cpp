// rotary_embedding: its checks, the row-parallel rotation, and its backward (the inverse rotation).
#include "rotary.hpp"

#include <algorithm>
#include <string>

#include "../core/parallel.hpp"
#include "../core/strided.hpp"
#include "node.hpp"

namespace latent {
namespace {

constexpr int64_t kRowGrainElements = 1 << 14;  // elements per parallel chunk, rounded to whole rows

// The rotation of x [B, T, H, D] (last dim of stride 1) into a fresh contiguous tensor; `inverse`
// rotates by -theta, which is the backward.
template <class T>
Tensor rotate_rows(const Tensor& x, const std::vector<int64_t>& positions, const Tensor& cos_table,
                   const Tensor& sin_table, bool inverse) {
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  const int64_t L = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  const int64_t sb = x.stride(0), st = x.stride(1), sh = x.stride(2);
  const T* px = x.data<T>();
  const T *pc = cos_table.data<T>(), *ps = sin_table.data<T>();
  T* po = out.data<T>();
  parallel_for(x.size(0) * L * H, std::max<int64_t>(1, kRowGrainElements / std::max<int64_t>(D, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t r = begin; r < end; ++r) {
                   const int64_t h = r % H, t = (r / H) % L, b = r / (H * L);
                   const int64_t at = positions[static_cast<size_t>(t)] * half;
                   rotate_pairs(px + b * sb + t * st + h * sh, po + r * D, pc + at, ps + at, half, inverse);
                 }
               });
  return out;
}

Tensor rotate(const Tensor& x, const std::vector<int64_t>& positions, const Tensor& cos_table, const Tensor& sin_table,
              bool inverse) {
  const Tensor in = x.stride(3) == 1 ? x : contiguous_copy(x);
  return dispatch_floating(x.dtype(), "rotary_embedding", [&]<class T>() {
    return rotate_rows<T>(in, positions, cos_table, sin_table, inverse);
  });
}

void check_table(const char* which, const Tensor& table, const Tensor& x, int64_t half) {
  if (table.dim() != 2 || table.size(1) != half || table.dtype() != x.dtype() || !table.is_contiguous())
    fail("rotary_embedding: {} must be a contiguous {} table [P, {}] for x {}, got {} {}", which, dtype_name(x.dtype()),
         half, shape_str(x.shape()), dtype_name(table.dtype()), shape_str(table.shape()));
}

}  // namespace

Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin, std::vector<int64_t> positions) {
  if (x.dim() != 4 || x.size(3) % 2 != 0)
    fail("rotary_embedding: x must be [B, T, H, D] with D even, got {}", shape_str(x.shape()));
  if (!is_floating(x.dtype()))
    fail("rotary_embedding: x must be a floating-point tensor, got {}", dtype_name(x.dtype()));
  const int64_t half = x.size(3) / 2;
  check_table("cos", cos, x, half);
  check_table("sin", sin, x, half);
  if (sin.size(0) != cos.size(0))
    fail("rotary_embedding: cos {} and sin {} tables differ in length", shape_str(cos.shape()), shape_str(sin.shape()));
  if (static_cast<int64_t>(positions.size()) != x.size(1))
    fail("rotary_embedding: {} positions for x {} with T = {}", positions.size(), shape_str(x.shape()), x.size(1));
  for (const int64_t p : positions)
    if (p < 0 || p >= cos.size(0))
      fail("rotary_embedding: position {} out of range [0, {}) of the tables", p, cos.size(0));
  Tensor out = rotate(x, positions, cos, sin, false);
  return autograd::record("rotary_embedding", out, {x}, {cos, sin},
                          [positions = std::move(positions), cos, sin](const Tensor& grad) -> std::vector<Tensor> {
                            return {rotate(grad, positions, cos, sin, true)};
                          });
}

}  // namespace latent

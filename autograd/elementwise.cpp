// Elementwise ops: forward kernel and gradient formula side by side, one definition each.
#include "elementwise.hpp"

#include <cmath>
#include <numbers>

#include "../core/elementwise.hpp"
#include "../core/factory.hpp"
#include "node.hpp"
#include "reduce.hpp"
#include "shape_ops.hpp"

namespace latent {
namespace {

using autograd::record;

// A differentiable unary op: y = f(x); dx = df(dy, x, y), both evaluated per element in type T.
template <class F, class DF> Tensor unary_op(const char* name, const Tensor& x, F f, DF df) {
  return dispatch_floating(x.dtype(), name, [&]<class T>() {
    const Tensor xc = contiguous_copy(x);
    Tensor y = map_unary_as<T>(xc, [&](T v) { return f(v); });
    return record(name, y, {x}, {xc, y}, [xc = xc.detach(), y = y.detach(), df](const Tensor& g) -> std::vector<Tensor> {
      const Tensor gc = contiguous_copy(g);
      Tensor dx = Tensor::empty(xc.shape(), xc.dtype());
      const T *pg = gc.data<T>(), *px = xc.data<T>(), *py = y.data<T>();
      T* pd = dx.data<T>();
      parallel_for(dx.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) pd[i] = df(pg[i], px[i], py[i]);
      });
      return {dx};
    });
  });
}

template <class F> Tensor binary_kernel(const Tensor& a, const Tensor& b, const char* op, F f) {
  check_same_dtype(a, b, op);
  return dispatch(a.dtype(), [&]<class T>() { return map_binary_as<T>(a, b, op, [&](T x, T y) { return f(x, y); }); });
}

template <class F> Tensor compare(const Tensor& a, const Tensor& b, const char* op, F f) {
  check_same_dtype(a, b, op);
  return dispatch(a.dtype(), [&]<class T>() {
    return map_binary_as<T, int64_t>(a, b, op, [&](T x, T y) { return static_cast<int64_t>(f(x, y)); });
  });
}

Tensor scalar_like(double v, const Tensor& t) { return scalar_tensor(v, t.dtype()); }

}  // namespace

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const size_t lead = grad.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t d = 0; d < grad.shape().size(); ++d)
    if (d < lead || (shape[d - lead] == 1 && grad.shape()[d] != 1)) dims.push_back(static_cast<int64_t>(d));
  return reshape(sum(grad, dims, true), shape);
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "add", [](auto x, auto y) { return x + y; });
  return record("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) -> std::vector<Tensor> {
    return {sum_to(g, sa), sum_to(g, sb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "sub", [](auto x, auto y) { return x - y; });
  return record("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) -> std::vector<Tensor> {
    return {sum_to(g, sa), sum_to(neg(g), sb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "mul", [](auto x, auto y) { return x * y; });
  // Each operand is kept (without its history) only if the other one needs a gradient.
  const Tensor keep_a = b.requires_grad() ? a.detach() : Tensor(), keep_b = a.requires_grad() ? b.detach() : Tensor();
  return record("mul", out, {a, b}, {keep_a, keep_b}, [keep_a, keep_b, sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{keep_b.defined() ? sum_to(mul(g, keep_b), sa) : Tensor(),
                               keep_a.defined() ? sum_to(mul(g, keep_a), sb) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_kernel(a, b, "div", [](auto x, auto y) { return x / y; });
  // da = g / b, db = -g a / b^2: b is always needed, a only for db.
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  const Tensor keep_a = need_b ? a.detach() : Tensor(), keep_b = b.detach();
  return record("div", out, {a, b}, {keep_a, keep_b}, [need_a, keep_a, keep_b, sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{need_a ? sum_to(div(g, keep_b), sa) : Tensor(),
                               keep_a.defined() ? sum_to(neg(div(mul(g, keep_a), mul(keep_b, keep_b))), sb) : Tensor()};
  });
}

Tensor add(const Tensor& a, double b) {
  Tensor out = dispatch(a.dtype(), [&]<class T>() { return map_unary_as<T>(a, [b](T x) { return T(x + b); }); });
  return record("add", out, {a}, [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
}

Tensor mul(const Tensor& a, double b) {
  Tensor out = dispatch(a.dtype(), [&]<class T>() { return map_unary_as<T>(a, [b](T x) { return T(x * b); }); });
  return record("mul", out, {a}, [b](const Tensor& g) -> std::vector<Tensor> { return {mul(g, b)}; });
}

Tensor neg(const Tensor& a) { return mul(a, -1.0); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, double b) { return add(a, b); }
Tensor operator-(const Tensor& a, double b) { return add(a, -b); }
Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
Tensor operator/(const Tensor& a, double b) { return mul(a, 1.0 / b); }
Tensor operator+(double a, const Tensor& b) { return add(b, a); }
Tensor operator-(double a, const Tensor& b) { return add(neg(b), a); }
Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
Tensor operator/(double a, const Tensor& b) { return div(scalar_like(a, b), b); }
Tensor operator-(const Tensor& a) { return neg(a); }

Tensor exp(const Tensor& x) {
  return unary_op("exp", x, [](auto v) { return std::exp(v); }, [](auto g, auto, auto y) { return g * y; });
}
Tensor log(const Tensor& x) {
  return unary_op("log", x, [](auto v) { return std::log(v); }, [](auto g, auto v, auto) { return g / v; });
}
Tensor sqrt(const Tensor& x) {
  return unary_op("sqrt", x, [](auto v) { return std::sqrt(v); }, [](auto g, auto, auto y) { return g / (y + y); });
}
Tensor rsqrt(const Tensor& x) {
  return unary_op("rsqrt", x, [](auto v) { return decltype(v)(1) / std::sqrt(v); },
                  [](auto g, auto, auto y) { return decltype(y)(-0.5) * g * y * y * y; });
}
Tensor pow(const Tensor& x, double exponent) {
  return unary_op("pow", x, [exponent](auto v) { return decltype(v)(std::pow(v, exponent)); },
                  [exponent](auto g, auto v, auto) {
                    return decltype(v)(exponent == 0 ? 0.0 : g * exponent * std::pow(v, exponent - 1));
                  });
}
Tensor square(const Tensor& x) {
  return unary_op("square", x, [](auto v) { return v * v; }, [](auto g, auto v, auto) { return g * (v + v); });
}
Tensor abs(const Tensor& x) {
  return unary_op("abs", x, [](auto v) { return std::abs(v); },
                  [](auto g, auto v, auto) { return v > 0 ? g : (v < 0 ? -g : decltype(g)(0)); });
}
Tensor clamp(const Tensor& x, double min, double max) {
  if (min > max) fail("clamp: min {:f} exceeds max {:f}", min, max);
  return unary_op("clamp", x, [min, max](auto v) { return decltype(v)(std::clamp<double>(v, min, max)); },
                  [min, max](auto g, auto v, auto) { return v >= min && v <= max ? g : decltype(g)(0); });
}
Tensor tanh(const Tensor& x) {
  return unary_op("tanh", x, [](auto v) { return std::tanh(v); },
                  [](auto g, auto, auto y) { return g * (decltype(y)(1) - y * y); });
}
Tensor sigmoid(const Tensor& x) {
  return unary_op("sigmoid", x, [](auto v) { return decltype(v)(1) / (decltype(v)(1) + std::exp(-v)); },
                  [](auto g, auto, auto y) { return g * y * (decltype(y)(1) - y); });
}
Tensor silu(const Tensor& x) {
  // d/dx x*s(x) = s + x*s*(1-s)
  return unary_op("silu", x, [](auto v) { return v / (decltype(v)(1) + std::exp(-v)); },
                  [](auto g, auto v, auto) {
                    using T = decltype(v);
                    const T s = T(1) / (T(1) + std::exp(-v));
                    return g * s * (T(1) + v * (T(1) - s));
                  });
}
Tensor gelu(const Tensor& x) {
  // gelu(x) = x * Phi(x); d/dx = Phi(x) + x * phi(x)
  return unary_op("gelu", x, [](auto v) { return decltype(v)(0.5 * v * (1 + std::erf(v * std::numbers::sqrt2 / 2))); },
                  [](auto g, auto v, auto) {
                    const double cdf = 0.5 * (1 + std::erf(v * std::numbers::sqrt2 / 2));
                    const double pdf = std::exp(-0.5 * v * v) * std::numbers::inv_sqrtpi / std::numbers::sqrt2;
                    return decltype(v)(g * (cdf + v * pdf));
                  });
}
Tensor relu(const Tensor& x) {
  return unary_op("relu", x, [](auto v) { return v > 0 ? v : decltype(v)(0); },
                  [](auto g, auto v, auto) { return v > 0 ? g : decltype(g)(0); });
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same_dtype(a, b, "where");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  const Tensor c = contiguous_copy(cond.expand(shape)), x = contiguous_copy(a.detach().expand(shape)),
               y = contiguous_copy(b.detach().expand(shape));
  Tensor out = Tensor::empty(shape, a.dtype());
  dispatch(a.dtype(), [&]<class T>() {
    dispatch(c.dtype(), [&]<class C>() {
      const C* pc = c.data<C>();
      const T *px = x.data<T>(), *py = y.data<T>();
      T* po = out.data<T>();
      parallel_for(out.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) po[i] = pc[i] != C(0) ? px[i] : py[i];
      });
    });
  });
  return record("where", out, {a, b}, {c}, [c, sa = a.shape(), sb = b.shape()](const Tensor& g) -> std::vector<Tensor> {
    const Tensor zero = zeros({}, g.dtype());
    return {sum_to(where(c, g, zero), sa), sum_to(where(c, zero, g), sb)};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  if (broadcast_shapes(x.shape(), mask.shape(), "masked_fill") != x.shape())
    fail("masked_fill: mask {} does not broadcast to {}", shape_str(mask.shape()), shape_str(x.shape()));
  return where(mask, full({}, value, x.dtype()), x);
}

Tensor eq(const Tensor& a, const Tensor& b) { return compare(a, b, "eq", [](auto x, auto y) { return x == y; }); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare(a, b, "ne", [](auto x, auto y) { return x != y; }); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare(a, b, "lt", [](auto x, auto y) { return x < y; }); }
Tensor le(const Tensor& a, const Tensor& b) { return compare(a, b, "le", [](auto x, auto y) { return x <= y; }); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare(a, b, "gt", [](auto x, auto y) { return x > y; }); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare(a, b, "ge", [](auto x, auto y) { return x >= y; }); }

}  // namespace latent

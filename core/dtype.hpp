// Element types a Tensor can hold, and the compile-time dispatch from a DType to a C++ type.
#pragma once
#include <cstdint>
#include <type_traits>

#include "error.hpp"

namespace latent {

enum class DType { Float32, Float64, Int64 };
inline constexpr DType kFloat32 = DType::Float32, kFloat64 = DType::Float64, kInt64 = DType::Int64;

inline constexpr size_t dtype_size(DType d) { return d == DType::Float32 ? 4 : 8; }
inline constexpr bool is_floating(DType d) { return d != DType::Int64; }

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
  }
  return "?";
}

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::Float32; }
template <> constexpr DType dtype_of<double>() { return DType::Float64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::Int64; }

// Calls fn.template operator()<T>() with T the C++ type of `d`.
template <class Fn> decltype(auto) dispatch(DType d, Fn&& fn) {
  switch (d) {
    case DType::Float32: return fn.template operator()<float>();
    case DType::Float64: return fn.template operator()<double>();
    case DType::Int64: return fn.template operator()<int64_t>();
  }
  fail("dispatch: unknown dtype");
}

// Throws unless `d` is a floating-point dtype; `op` names the caller in the error.
inline void check_floating(DType d, const char* op) {
  if (!is_floating(d)) fail("{}: expected a floating-point tensor, got {}", op, dtype_name(d));
}

// Same as dispatch, for ops that only make sense on floating-point data (checked by check_floating).
template <class Fn> decltype(auto) dispatch_floating(DType d, const char* op, Fn&& fn) {
  check_floating(d, op);
  if (d == DType::Float32) return fn.template operator()<float>();
  return fn.template operator()<double>();
}

}  // namespace latent

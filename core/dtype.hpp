// Element types a Tensor can hold, and the compile-time dispatch from a DType to a C++ type.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

#include "bfloat16.hpp"
#include "error.hpp"

namespace latent {

enum class DType { Float32, Float64, Int64, BFloat16 };
inline constexpr DType kFloat32 = DType::Float32, kFloat64 = DType::Float64, kInt64 = DType::Int64,
                       kBFloat16 = DType::BFloat16;

inline constexpr size_t dtype_size(DType d) {
  return d == DType::Float32 ? 4 : d == DType::BFloat16 ? 2 : 8;
}
inline constexpr bool is_floating(DType d) { return d != DType::Int64; }

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int64: return "int64";
    case DType::BFloat16: return "bfloat16";
  }
  return "?";
}

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::Float32; }
template <> constexpr DType dtype_of<double>() { return DType::Float64; }
template <> constexpr DType dtype_of<int64_t>() { return DType::Int64; }
template <> constexpr DType dtype_of<bfloat16>() { return DType::BFloat16; }

// One element converted to type D: static_cast, except that bfloat16 goes through float32 and
// narrowing to it rounds to nearest even (from float64 in one rounding, not two).
template <class D, class S> constexpr D convert_element(S value) {
  if constexpr (std::is_same_v<S, bfloat16> && std::is_same_v<D, bfloat16>) {
    return value;
  } else if constexpr (std::is_same_v<S, bfloat16>) {
    return static_cast<D>(to_float(value));
  } else if constexpr (std::is_same_v<D, bfloat16>) {
    const double wide = static_cast<double>(value);
    const float narrow = static_cast<float>(wide);
    bfloat16 out = to_bfloat16(narrow);
    // float64 -> float32 may itself have rounded onto a bfloat16 tie; break the tie toward `wide`.
    const uint32_t bits = std::bit_cast<uint32_t>(narrow);
    if ((bits & 0xFFFFu) == 0x8000u && static_cast<double>(narrow) != wide && (bits & 0x7F800000u) != 0x7F800000u) {
      const bool away = (wide > narrow) == (narrow > 0);  // |wide| > |narrow|: round the magnitude up
      out.bits = static_cast<uint16_t>((bits >> 16) + (away ? 1 : 0));
    }
    return out;
  } else {
    return static_cast<D>(value);
  }
}

// Calls fn.template operator()<T>() with T the C++ type of `d`. bfloat16 is a storage format: tensors
// of it are created, copied, converted, printed, saved and loaded (dispatch_with_bfloat16), while
// arithmetic runs on float32 (GEMMs convert their operands themselves, see gemm.hpp).
template <class Fn> decltype(auto) dispatch(DType d, Fn&& fn) {
  switch (d) {
    case DType::Float32: return fn.template operator()<float>();
    case DType::Float64: return fn.template operator()<double>();
    case DType::Int64: return fn.template operator()<int64_t>();
    case DType::BFloat16: break;
  }
  fail("bfloat16 tensors hold data only: convert with .to(kFloat32) before computing with them");
}

// Same, with bfloat16 among the types: for the kernels that only move and convert elements.
template <class Fn> decltype(auto) dispatch_with_bfloat16(DType d, Fn&& fn) {
  if (d == DType::BFloat16) return fn.template operator()<bfloat16>();
  return dispatch(d, std::forward<Fn>(fn));
}

// Throws unless `d` is a floating-point dtype that arithmetic runs on (bfloat16 holds data only, so
// it is refused too, with the way out); `op` names the caller in the error.
inline void check_floating(DType d, const char* op) {
  if (d == DType::BFloat16) fail("{}: bfloat16 tensors hold data only; convert with .to(kFloat32) first", op);
  if (!is_floating(d)) fail("{}: expected a floating-point tensor, got {}", op, dtype_name(d));
}

// Same as dispatch, for ops that only make sense on float32/float64 data (checked by check_floating).
template <class Fn> decltype(auto) dispatch_floating(DType d, const char* op, Fn&& fn) {
  check_floating(d, op);
  if (d == DType::Float32) return fn.template operator()<float>();
  return fn.template operator()<double>();
}

}  // namespace latent

// Printing tensors: fmt::format("{}", t) and std::ostream << t show shape, dtype and values,
// eliding the middle of long dimensions as PyTorch does.
#pragma once
#include <ostream>

#include <fmt/format.h>

#include "tensor.hpp"

template <> struct fmt::formatter<latent::Tensor> : fmt::formatter<std::string> {
  template <class Context> auto format(const latent::Tensor& t, Context& ctx) const {
    return fmt::formatter<std::string>::format(t.defined() ? t.to_string() : std::string("Tensor(undefined)"), ctx);
  }
};

namespace latent {
inline std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  return os << (t.defined() ? t.to_string() : std::string("Tensor(undefined)"));
}
}  // namespace latent

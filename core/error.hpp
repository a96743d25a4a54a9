// latent::Error: the one exception type every user-facing failure throws, and fail() that throws it.
#pragma once
#include <fmt/core.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace latent {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws latent::Error with the fmt-formatted message: fail("{}: got {}", op, n). The format string
// is checked at compile time; a message known only at run time is passed as fail("{}", message).
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace latent

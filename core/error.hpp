// latent::Error: the one exception type every user-facing failure throws.
#pragma once
#include <stdexcept>
#include <string>

namespace latent {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws latent::Error with a message built by fmt-style formatting at the call site.
[[noreturn]] inline void fail(const std::string& message) { throw Error(message); }

}  // namespace latent

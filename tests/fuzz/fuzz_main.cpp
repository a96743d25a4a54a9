// The libFuzzer entry point of one target, chosen at build time by LATENT_FUZZ_TARGET.
#include <cstdio>
#include <cstdlib>

#include <latent/latent.hpp>

#include "targets.hpp"

namespace {

const latent::fuzz::Target& target() {
  static const latent::fuzz::Target* const found = [] {
    const latent::fuzz::Target* t = latent::fuzz::find_target(LATENT_FUZZ_TARGET);
    if (!t) {
      std::fprintf(stderr, "fuzz: no target named '%s'\n", LATENT_FUZZ_TARGET);
      std::abort();
    }
    return t;
  }();
  return *found;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One thread: parallel_for splits work the same at any thread count, and a single thread keeps
  // each run short and its stack traces readable.
  latent::set_num_threads(1);
  return 0;
}

// A refusal (latent::Error) is the expected outcome for most inputs; any other exception escapes,
// terminates the process, and libFuzzer records the input as a crash.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    target().run(data, size);
  } catch (const latent::Error&) {
  }
  return 0;
}

// A fresh process that loads one model directory and reports its memory, for the test that loading
// streams (test_memory.cpp): fresh, so that nothing of the test's own allocations, allocator cache
// or thread pool counts, and so that a data limit binds this load alone.
//
//   load_probe stream|collect DIR [BUDGET_BYTES]
//
// stream:  models::from_pretrained(DIR), which streams each tensor into its parameter.
// collect: what loading did before streaming: every tensor of DIR into one map
//          (models::load_model_tensors), then the model, then load_state_dict from the map.
// BUDGET_BYTES: RLIMIT_DATA is set to the data segment size (VmData) at the start plus this many
// bytes. It counts private writable memory (the heap, anonymous mappings: tensors and
// temporaries) and not the read-only mappings of the weight files.
//
// Prints "data_before <bytes> data_after <bytes> rss_before <bytes> rss_peak <bytes>" (rss_peak:
// VmHWM, the resident high-water mark of the whole process) and exits 0 once loaded; exits 3 with
// the error on stderr if loading failed.
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include <latent/latent.hpp>

namespace {

// A line "<key>: <n> kB" of /proc/self/status, in bytes.
long long status_bytes(const std::string& key) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  std::fprintf(stderr, "load_probe: /proc/self/status has no %s\n", key.c_str());
  std::exit(2);
}

void load(const std::string& mode, const std::string& dir) {
  using namespace latent;
  if (mode == "stream") {
    models::from_pretrained(dir);
    return;
  }
  const std::map<std::string, Tensor> state = models::load_model_tensors(dir, "load_probe");
  const auto model = models::from_config_file((std::filesystem::path(dir) / "config.json").string());
  model->load_state_dict(state, /*strict=*/false);  // the MTP copies are extra; the memory is what counts
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4 || (std::string(argv[1]) != "stream" && std::string(argv[1]) != "collect")) {
    std::fprintf(stderr, "usage: load_probe stream|collect DIR [BUDGET_BYTES]\n");
    return 2;
  }
  const long long data_before = status_bytes("VmData"), rss_before = status_bytes("VmRSS");
  if (argc == 4) {
    const rlimit limit{static_cast<rlim_t>(data_before + std::stoll(argv[3])), RLIM_INFINITY};
    if (::setrlimit(RLIMIT_DATA, &limit) != 0) {
      std::perror("load_probe: setrlimit");
      return 2;
    }
  }
  try {
    load(argv[1], argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_probe: %s\n", e.what());
    return 3;
  }
  std::printf("data_before %lld data_after %lld rss_before %lld rss_peak %lld\n", data_before, status_bytes("VmData"),
              rss_before, status_bytes("VmHWM"));
  return 0;
}

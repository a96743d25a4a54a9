// Replays every fuzz corpus and regression input through the fuzz targets' entry points, so the
// inputs stay covered by the ordinary (gcc, unsanitised) suite too.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../helpers.hpp"
#include "targets.hpp"

namespace fs = std::filesystem;

namespace {

fs::path fuzz_dir() {
  const char* dir = std::getenv("LATENT_FUZZ_DIR");
  REQUIRE(dir != nullptr);  // set by tests/fuzz/meson.build
  return dir;
}

std::vector<fs::path> inputs_in(const fs::path& dir) {
  std::vector<fs::path> files;
  if (fs::is_directory(dir))
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

enum class Outcome { accepted, refused };

// Anything but acceptance or a latent::Error (an InvariantBroken, a standard exception) fails.
Outcome run(const latent::fuzz::Target& target, const std::vector<uint8_t>& bytes) {
  try {
    target.run(bytes.data(), bytes.size());
    return Outcome::accepted;
  } catch (const latent::Error&) {
    return Outcome::refused;
  }
}

}  // namespace

TEST_CASE("every fuzz corpus and regression input is accepted or refused with latent::Error", "[fuzz]") {
  latent::set_num_threads(1);
  for (const auto* target = latent::fuzz::targets_begin(); target != latent::fuzz::targets_end(); ++target) {
    const std::string name(target->name);
    const std::vector<fs::path> corpus = inputs_in(fuzz_dir() / "corpus" / name);
    INFO("target " << name);
    // A corpus must exercise both sides: inputs named valid_* must load, bad_* must be refused.
    REQUIRE(std::any_of(corpus.begin(), corpus.end(),
                        [](const fs::path& p) { return p.filename().string().rfind("valid_", 0) == 0; }));
    REQUIRE(std::any_of(corpus.begin(), corpus.end(),
                        [](const fs::path& p) { return p.filename().string().rfind("bad_", 0) == 0; }));
    std::vector<fs::path> files = corpus;
    for (const fs::path& p : inputs_in(fuzz_dir() / "regressions" / name)) files.push_back(p);
    for (const fs::path& file : files) {
      INFO("input " << file.string());
      const std::string stem = file.filename().string();
      Outcome outcome;
      try {
        outcome = run(*target, read_bytes(file));
      } catch (const std::exception& e) {
        FAIL("neither accepted nor refused with latent::Error: " << e.what());
      }
      if (stem.rfind("valid_", 0) == 0) CHECK(outcome == Outcome::accepted);
      if (stem.rfind("bad_", 0) == 0) CHECK(outcome == Outcome::refused);
    }
  }
}

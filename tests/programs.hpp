// What the tests that run latent's built programs share: the programs' paths (from the environment
// meson sets), scratch directories (temp_dir.hpp), shell quoting and whole-file reads.
#pragma once
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "temp_dir.hpp"

namespace latent::testing {

// The path of a built program, from the environment variable meson's test() sets (LATENT_TRAIN, ...).
inline std::string program(const char* variable) {
  const char* path = std::getenv(variable);
  if (!path || !std::filesystem::exists(path)) FAIL(variable << " must name the built program (meson sets it for `meson test`)");
  return path;
}

// s as one word for /bin/sh, whatever characters it holds.
inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace latent::testing

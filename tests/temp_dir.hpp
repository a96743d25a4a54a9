// The one scratch directory of the tests: a fresh directory under the system temporary directory,
// removed with everything in it when the object goes out of scope.
#pragma once
#include <stdlib.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

namespace latent::testing {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "latent-test") {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (!::mkdtemp(pattern.data())) FAIL("mkdtemp failed for " << pattern);
    path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;  // a destructor must not throw; a leftover scratch file is harmless
    std::filesystem::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string operator/(const std::string& name) const { return (path / name).string(); }
  // Writes `contents` to the file `name` in the directory (bytes as given); returns its path.
  std::string write(const std::string& name, const std::string& contents) const {
    std::ofstream out(path / name, std::ios::binary | std::ios::trunc);
    out << contents;
    if (!out) FAIL("cannot write " << (path / name).string());
    return (path / name).string();
  }
};

}  // namespace latent::testing

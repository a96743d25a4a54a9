// write_file_atomic: temporary file, fsync, rename, directory fsync; cleanup on every failure path;
// crash points (crash_points.hpp) between those steps, for the tests that kill the process there.
#include "atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "../core/error.hpp"
#include "crash_points.hpp"

namespace latent::io {

namespace {

std::string errno_text() { return std::strerror(errno); }

// Returns fsync's errno (0 on success) so callers can word the error for what they were doing.
int fsync_directory(const std::string& dir, bool& opened) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  opened = fd >= 0;
  if (!opened) return errno;
  const int rc = ::fsync(fd);
  const int saved_errno = errno;
  ::close(fd);
  return rc != 0 && saved_errno != EINVAL ? saved_errno : 0;
}

void sync_parent_directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  bool opened = false;
  if (const int error = fsync_directory(dir, opened); error != 0) {
    fail("{}: written, but its directory could not be {}: {}", path, opened ? "synced" : "opened to sync it",
         std::strerror(error));
  }
}

}  // namespace

void sync_directory(const std::string& dir) {
  bool opened = false;
  if (const int error = fsync_directory(dir, opened); error != 0)
    fail("{}: cannot {} directory: {}", dir, opened ? "sync the" : "open the", std::strerror(error));
}

bool is_temporary_name(std::string_view file_name) {
  const size_t marker = file_name.rfind(".tmp.");
  if (marker == std::string_view::npos || marker + 5 == file_name.size()) return false;
  for (char c : file_name.substr(marker + 5))
    if (c < '0' || c > '9') return false;
  return true;
}

void write_all(std::FILE* file, const void* data, size_t nbytes, const std::string& path) {
  if (nbytes == 0) return;
  if (std::fwrite(data, 1, nbytes, file) != nbytes) fail("{}: write failed: {}", path, errno_text());
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  if (!file) fail("{}: cannot create temporary file {}: {}", path, temporary, errno_text());
  try {
    crash_point("created", temporary);
    write(file);
    crash_point("wrote (partly still buffered)", temporary);
    if (std::ferror(file)) fail("{}: write failed", path);
    if (std::fflush(file) != 0) fail("{}: write failed: {}", path, errno_text());
    if (::fsync(::fileno(file)) != 0) fail("{}: fsync failed: {}", path, errno_text());
    std::FILE* closing = file;
    file = nullptr;  // fclose releases the stream even when it reports an error
    if (std::fclose(closing) != 0) fail("{}: closing the temporary file failed: {}", path, errno_text());
    crash_point("synced", temporary);
    if (std::rename(temporary.c_str(), path.c_str()) != 0)
      fail("{}: cannot replace it with {}: {}", path, temporary, errno_text());
  } catch (...) {
    if (file) std::fclose(file);
    std::remove(temporary.c_str());
    throw;
  }
  crash_point("renamed into place (directory not yet synced)", path);
  sync_parent_directory(path);
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  write_file_atomic(path, [&](std::FILE* file) { write_all(file, contents.data(), contents.size(), path); });
}

}  // namespace latent::io

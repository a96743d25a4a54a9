// write_file_atomic: temporary file, fsync, rename, directory fsync; cleanup on every failure path.
#include "atomic_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "../../core/error.hpp"

namespace latent::io {

namespace {

std::string errno_text() { return std::strerror(errno); }

// fsync of the directory entry is what makes a completed rename survive a power loss. Some file
// systems cannot fsync directories (EINVAL); there is nothing more to be done on those.
void sync_directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    throw Error(fmt::format("{}: written, but its directory could not be opened to sync it: {}", path, errno_text()));
  const int rc = ::fsync(fd);
  const int saved_errno = errno;
  ::close(fd);
  if (rc != 0 && saved_errno != EINVAL) {
    throw Error(
        fmt::format("{}: written, but its directory could not be synced: {}", path, std::strerror(saved_errno)));
  }
}

}  // namespace

void write_all(std::FILE* file, const void* data, size_t nbytes, const std::string& path) {
  if (nbytes == 0) return;
  if (std::fwrite(data, 1, nbytes, file) != nbytes) throw Error(path + ": write failed: " + errno_text());
}

void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  if (!file) throw Error(path + ": cannot create temporary file " + temporary + ": " + errno_text());
  try {
    write(file);
    if (std::ferror(file)) throw Error(path + ": write failed");
    if (std::fflush(file) != 0) throw Error(path + ": write failed: " + errno_text());
    if (::fsync(::fileno(file)) != 0) throw Error(path + ": fsync failed: " + errno_text());
    std::FILE* closing = file;
    file = nullptr;  // fclose releases the stream even when it reports an error
    if (std::fclose(closing) != 0) throw Error(path + ": closing the temporary file failed: " + errno_text());
    if (std::rename(temporary.c_str(), path.c_str()) != 0)
      throw Error(path + ": cannot replace it with " + temporary + ": " + errno_text());
  } catch (...) {
    if (file) std::fclose(file);
    std::remove(temporary.c_str());
    throw;
  }
  sync_directory(path);
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  write_file_atomic(path, [&](std::FILE* file) { write_all(file, contents.data(), contents.size(), path); });
}

}  // namespace latent::io

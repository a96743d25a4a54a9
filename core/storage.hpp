// A block of bytes shared by a tensor and all its views: from the caching allocator, or borrowed
// from elsewhere (a memory-mapped file) and kept alive by a holder.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace latent {

class Storage {
 public:
  explicit Storage(size_t nbytes);                                          // caching allocator
  Storage(void* data, size_t nbytes, std::shared_ptr<void> keep_alive);   // borrowed memory
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }

  // Counts in-place writes through any tensor over these bytes (views and detached handles share
  // it). Autograd remembers it for every tensor saved for backward and refuses to differentiate
  // through values that changed since (see autograd/node.hpp, SavedVersions).
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

  // A bfloat16 copy of these float32 bytes, element for element, that the op writing them rounded as
  // it wrote (core/gemm.hpp, rounded_copy): returned while no in-place write has bumped the version.
  void attach_rounded(std::shared_ptr<Storage> copy) {
    rounded_ = std::move(copy);
    rounded_version_ = version();
  }
  std::shared_ptr<Storage> rounded() const { return rounded_version_ == version() ? rounded_ : nullptr; }

 private:
  void* data_;
  size_t nbytes_;
  std::atomic<uint64_t> version_{0};
  std::shared_ptr<void> keep_alive_;  // set for borrowed memory; empty when the allocator owns it
  std::shared_ptr<Storage> rounded_;
  uint64_t rounded_version_ = 0;
};

}  // namespace latent

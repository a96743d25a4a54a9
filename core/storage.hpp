// A block of bytes shared by a tensor and all its views: from the caching allocator, or borrowed
// from elsewhere (a memory-mapped file) and kept alive by a holder.
#pragma once
#include <cstddef>
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

 private:
  void* data_;
  size_t nbytes_;
  std::shared_ptr<void> keep_alive_;  // set for borrowed memory; empty when the allocator owns it
};

}  // namespace latent

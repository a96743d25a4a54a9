// Storage: ownership of tensor bytes.
#include "storage.hpp"

#include "allocator.hpp"

namespace latent {

Storage::Storage(size_t nbytes) : data_(allocator::allocate(nbytes)), nbytes_(nbytes) {}

Storage::Storage(void* data, size_t nbytes, std::shared_ptr<void> keep_alive)
    : data_(data), nbytes_(nbytes), keep_alive_(std::move(keep_alive)) {}

Storage::~Storage() {
  if (!keep_alive_) allocator::deallocate(data_, nbytes_);
}

}  // namespace latent

// Size classes: four steps per power of two (at most 25% slack), so a training step that asks for the
// same shapes every iteration is served from the free lists after its first pass.
#include "allocator.hpp"

#include <bit>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "error.hpp"

namespace latent::allocator {
namespace {

struct Cache {
  std::mutex mutex;
  std::map<size_t, std::vector<void*>> free_blocks;  // size class -> blocks
  AllocatorStats stats;
};

Cache& cache() {
  static Cache* instance = new Cache();  // never destroyed: tensors may outlive static destructors
  return *instance;
}

}  // namespace

size_t size_class(size_t nbytes) {
  if (nbytes <= 256) return 256;
  const size_t top = std::bit_floor(nbytes - 1);  // largest power of two below nbytes
  const size_t step = top / 4;
  return (nbytes + step - 1) / step * step;
}

void* allocate(size_t nbytes) {
  const size_t block = size_class(nbytes);
  Cache& c = cache();
  {
    std::lock_guard lock(c.mutex);
    auto& list = c.free_blocks[block];
    c.stats.bytes_in_use += static_cast<int64_t>(block);
    if (c.stats.bytes_in_use > c.stats.peak_bytes_in_use) c.stats.peak_bytes_in_use = c.stats.bytes_in_use;
    if (!list.empty()) {
      void* p = list.back();
      list.pop_back();
      c.stats.bytes_cached -= static_cast<int64_t>(block);
      return p;
    }
    ++c.stats.os_allocations;
  }
  void* p = std::aligned_alloc(kAlignment, block);
  if (p == nullptr) {
    std::lock_guard lock(c.mutex);
    c.stats.bytes_in_use -= static_cast<int64_t>(block);
    fail("allocator: out of memory allocating {} bytes", nbytes);
  }
  return p;
}

void deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  const size_t block = size_class(nbytes);
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  c.free_blocks[block].push_back(ptr);
  c.stats.bytes_in_use -= static_cast<int64_t>(block);
  c.stats.bytes_cached += static_cast<int64_t>(block);
}

AllocatorStats stats() {
  std::lock_guard lock(cache().mutex);
  return cache().stats;
}

void reset_peak() {
  std::lock_guard lock(cache().mutex);
  cache().stats.peak_bytes_in_use = cache().stats.bytes_in_use;
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard lock(c.mutex);
  for (auto& [block, list] : c.free_blocks) {
    for (void* p : list) std::free(p);
    list.clear();
  }
  c.stats.bytes_cached = 0;
}

}  // namespace latent::allocator

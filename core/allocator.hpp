// The caching allocator behind every tensor's storage: 64-byte aligned blocks in size classes,
// reused instead of returned to the OS, with counters that benchmarks and tests read.
#pragma once
#include <cstddef>
#include <cstdint>

namespace latent {

struct AllocatorStats {
  int64_t bytes_in_use = 0;      // handed out to live tensors (rounded to the size class)
  int64_t peak_bytes_in_use = 0;
  int64_t bytes_cached = 0;      // freed blocks kept for reuse
  int64_t os_allocations = 0;    // how many times the OS was asked for memory, ever
};

namespace allocator {
inline constexpr size_t kAlignment = 64;
void* allocate(size_t nbytes);          // never returns null; throws latent::Error when the OS refuses
void deallocate(void* ptr, size_t nbytes);
AllocatorStats stats();
void reset_peak();
void empty_cache();                     // returns every cached block to the OS
size_t size_class(size_t nbytes);       // the block size a request of nbytes is served with
}  // namespace allocator

}  // namespace latent

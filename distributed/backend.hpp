// The collectives a process group is built from, written once over MPI (mpi_backend.cpp) and once for
// a library built without MPI (single_process_backend.cpp); Meson compiles exactly one of the two.
// Internal: not installed, included by distributed.cpp only.
#pragma once
#include <cstdint>
#include <memory>

#include "../core/dtype.hpp"

namespace latent::distributed::backend {

struct World {
  int rank = 0, size = 1, local_size = 1;
  bool owns_runtime = false;  // we initialised MPI, so we finalise it
};

bool available();
// Joins the job an MPI launcher started with `launched_size` ranks (>= 1).
World join(int launched_size);
void leave(const World& world);

void broadcast_bytes(void* data, int64_t bytes, int root);
// In place, elementwise over the ranks; dtype Float32, Float64 or Int64.
void all_reduce_sum(void* data, int64_t count, DType dtype);
void barrier();
void abort(int code);

// In-place sums in flight at once, so that packing one gradient bucket overlaps reducing the last.
class AsyncSums {
 public:
  AsyncSums();
  ~AsyncSums();
  AsyncSums(const AsyncSums&) = delete;
  AsyncSums& operator=(const AsyncSums&) = delete;

  size_t start(void* data, int64_t count, DType dtype);  // returns the index wait() takes
  void progress();                                       // lets the runtime advance what is in flight
  void wait(size_t index);

 private:
  struct Pending;
  std::unique_ptr<Pending> pending_;
};

}  // namespace latent::distributed::backend

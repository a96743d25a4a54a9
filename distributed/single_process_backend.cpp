// The process-group collectives for a library built without MPI: the only group is the process itself,
// where a broadcast or a sum over the ranks leaves every buffer as it is.
#include "../core/error.hpp"
#include "backend.hpp"

namespace latent::distributed::backend {

bool available() { return false; }

World join(int launched_size) {
  if (launched_size > 1)
    fail("distributed: this process is one of {} ranks started by an MPI launcher, but latent was built without MPI "
         "(-Dmpi=disabled or no libopenmpi-dev at configure time); rebuild with MPI or run a single process",
         launched_size);
  return World{};
}

void leave(const World&) {}
void broadcast_bytes(void*, int64_t, int) {}
void all_reduce_sum(void*, int64_t, DType) {}
void barrier() {}
void abort(int) {}

struct AsyncSums::Pending {
  size_t started = 0;
};

AsyncSums::AsyncSums() : pending_(std::make_unique<Pending>()) {}
AsyncSums::~AsyncSums() = default;
size_t AsyncSums::start(void*, int64_t, DType) { return pending_->started++; }
void AsyncSums::progress() {}
void AsyncSums::wait(size_t) {}

}  // namespace latent::distributed::backend

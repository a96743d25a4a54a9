// The process-group collectives over MPI (MPI_COMM_WORLD, C API), for a library built with MPI.
//
// Determinism: a run must not depend on which rank reaches a collective first. We rely on two things.
// (1) MPI_Allreduce is called on the same buffers in the same order by every rank, and for a fixed
// world size and message size Open MPI's tuned component picks a fixed algorithm, so the order in which
// the ranks' contributions are added does not change from run to run. (2) Every rank receives the same
// bits: with two ranks the sum is a single a + b, which IEEE addition makes commutative; for more ranks
// the algorithms Open MPI uses compute each reduced element once and distribute it (ring, Rabenseifner)
// or add the same pairs on every rank (recursive doubling). The suite checks (2) by comparing the ranks'
// weights bitwise after training.
#include "backend.hpp"

#include <algorithm>
#include <vector>

#define OMPI_SKIP_MPICXX 1  // the C API is all we use; the deprecated C++ bindings warn under -Wextra
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include "../core/error.hpp"

namespace latent::distributed::backend {

namespace {

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return MPI_FLOAT;
    case DType::Float64: return MPI_DOUBLE;
    case DType::Int64: return MPI_INT64_T;
    default: break;
  }
  fail("distributed: no MPI sum for dtype {}", dtype_name(dtype));
}

// MPI counts are int: a buffer of more than 2^30 elements goes in chunks.
constexpr int64_t kMaxCount = int64_t(1) << 30;

template <class Fn>
void for_each_chunk(void* data, int64_t count, int64_t element_size, Fn&& fn) {
  auto* base = static_cast<char*>(data);
  for (int64_t first = 0; first < count; first += kMaxCount)
    fn(base + first * element_size, int(std::min(kMaxCount, count - first)));
}

}  // namespace

bool available() { return true; }

World join(int) {
  World world;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // TBB workers never call MPI; only the thread that called world() does (MPI_THREAD_FUNNELED).
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    world.owns_runtime = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world.size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &world.local_size);
  MPI_Comm_free(&local);
  return world;
}

void leave(const World& world) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (world.owns_runtime && !finalized) MPI_Finalize();
}

void broadcast_bytes(void* data, int64_t bytes, int root) {
  for_each_chunk(data, bytes, 1, [&](void* chunk, int count) { MPI_Bcast(chunk, count, MPI_BYTE, root, MPI_COMM_WORLD); });
}

void all_reduce_sum(void* data, int64_t count, DType dtype) {
  const MPI_Datatype type = mpi_type(dtype);
  for_each_chunk(data, count, int64_t(dtype_size(dtype)),
                 [&](void* chunk, int n) { MPI_Allreduce(MPI_IN_PLACE, chunk, n, type, MPI_SUM, MPI_COMM_WORLD); });
}

void barrier() { MPI_Barrier(MPI_COMM_WORLD); }

void abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

struct AsyncSums::Pending {
  std::vector<MPI_Request> requests;
};

AsyncSums::AsyncSums() : pending_(std::make_unique<Pending>()) {}

AsyncSums::~AsyncSums() {
  for (MPI_Request& request : pending_->requests) MPI_Wait(&request, MPI_STATUS_IGNORE);
}

size_t AsyncSums::start(void* data, int64_t count, DType dtype) {
  pending_->requests.push_back(MPI_REQUEST_NULL);
  if (count > kMaxCount) {  // rare: a buffer beyond 2^30 elements goes blocking, chunk by chunk
    all_reduce_sum(data, count, dtype);
  } else {
    MPI_Iallreduce(MPI_IN_PLACE, data, int(count), mpi_type(dtype), MPI_SUM, MPI_COMM_WORLD,
                   &pending_->requests.back());
  }
  return pending_->requests.size() - 1;
}

// Open MPI advances non-blocking collectives only inside MPI calls: poke the ones in flight.
void AsyncSums::progress() {
  int done = 0;
  MPI_Testall(int(pending_->requests.size()), pending_->requests.data(), &done, MPI_STATUSES_IGNORE);
}

void AsyncSums::wait(size_t index) { MPI_Wait(&pending_->requests.at(index), MPI_STATUS_IGNORE); }

}  // namespace latent::distributed::backend

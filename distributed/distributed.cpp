// The MPI process group, tensor collectives and the bucketed gradient all-reduce.
//
// Determinism: a run must not depend on which rank reaches a collective first. We rely on two things.
// (1) MPI_Allreduce is called on the same buffers in the same order by every rank, and for a fixed
// world size and message size Open MPI's tuned component picks a fixed algorithm, so the order in which
// the ranks' contributions are added does not change from run to run. (2) Every rank receives the same
// bits: with two ranks the sum is a single a + b, which IEEE addition makes commutative; for more ranks
// the algorithms Open MPI uses compute each reduced element once and distribute it (ring, Rabenseifner)
// or add the same pairs on every rank (recursive doubling). The suite checks (2) by comparing the ranks'
// weights bitwise after training.
#include "distributed.hpp"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#ifdef LATENT_WITH_MPI
#define OMPI_SKIP_MPICXX 1  // the C API is all we use; the deprecated C++ bindings warn under -Wextra
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

#include "../core/dtype.hpp"
#include "../core/error.hpp"

namespace latent::distributed {

namespace {

// The world size an MPI launcher announced in the environment (0 when the process was started alone).
int launcher_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (const char* value = std::getenv(name)) return std::max(1, std::atoi(value));
  return std::getenv("PMIX_RANK") ? 1 : 0;
}

void check_contiguous(const Tensor& tensor, const char* op) {
  if (!tensor.defined()) throw Error(std::string(op) + ": undefined tensor");
  if (!tensor.is_contiguous())
    throw Error(std::string(op) + ": tensor " + shape_str(tensor.shape()) + " must be contiguous (strides " +
                shape_str(tensor.strides()) + ")");
}

#ifdef LATENT_WITH_MPI
MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return MPI_FLOAT;
    case DType::Float64: return MPI_DOUBLE;
    case DType::Int64: return MPI_INT64_T;
    case DType::BFloat16: break;  // reductions run on float32 gradients
  }
  throw Error("distributed: unsupported dtype");
}

// MPI counts are int: a tensor of more than INT_MAX elements goes in chunks.
constexpr int64_t kMaxCount = int64_t(1) << 30;

template <class Fn>
void for_each_chunk(const Tensor& tensor, Fn&& fn) {
  auto* base = static_cast<char*>(tensor.raw_data());
  const int64_t element_size = int64_t(dtype_size(tensor.dtype()));
  for (int64_t first = 0; first < tensor.numel(); first += kMaxCount)
    fn(base + first * element_size, int(std::min(kMaxCount, tensor.numel() - first)));
}
#endif

// Every rank agrees that `signature` (a description of what it is about to exchange) is the same as
// rank 0's, or every rank throws: a mismatch must fail as an error, not as a hang or a truncation.
void check_same_on_all_ranks(const ProcessGroup& group, const std::string& signature, const std::string& what) {
  if (group.size() == 1) return;
  const std::string root_signature = group.broadcast(signature, 0);
  const double mismatches = group.all_reduce_sum({root_signature == signature ? 0.0 : 1.0})[0];
  if (mismatches > 0)
    throw Error(what + " differs between ranks: rank 0 has " + root_signature +
                (root_signature == signature ? std::string(", some other rank has not")
                                             : ", rank " + std::to_string(group.rank()) + " has " + signature));
}

std::string layout_signature(const std::vector<Tensor>& tensors) {
  std::string s = std::to_string(tensors.size()) + " tensors";
  for (const Tensor& t : tensors) {
    s += ' ';
    s += dtype_name(t.dtype());
    s += shape_str(t.shape());
  }
  return s;
}

}  // namespace

bool mpi_available() {
#ifdef LATENT_WITH_MPI
  return true;
#else
  return false;
#endif
}

ProcessGroup::ProcessGroup() {
  const int launched = launcher_world_size();
  if (launched == 0) return;  // started alone: a group of one, MPI never touched
#ifdef LATENT_WITH_MPI
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // TBB workers never call MPI; only the thread that called world() does (MPI_THREAD_FUNNELED).
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    initialized_mpi_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &local_size_);
  MPI_Comm_free(&local);
#else
  if (launched > 1)
    throw Error("distributed: this process is one of " + std::to_string(launched) +
                " ranks started by an MPI launcher, but latent was built without MPI (-Dmpi=disabled or no "
                "libopenmpi-dev at configure time); rebuild with MPI or run a single process");
#endif
}

ProcessGroup::~ProcessGroup() {
#ifdef LATENT_WITH_MPI
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (initialized_mpi_ && !finalized) MPI_Finalize();
#endif
}

ProcessGroup& ProcessGroup::world() {
  static ProcessGroup group;
  return group;
}

void ProcessGroup::broadcast(const Tensor& tensor, int root) const {
  check_contiguous(tensor, "broadcast");
  if (root < 0 || root >= size_)
    throw Error("broadcast: root " + std::to_string(root) + " out of range [0, " + std::to_string(size_) + ")");
  if (size_ == 1) return;
#ifdef LATENT_WITH_MPI
  for_each_chunk(tensor, [&](void* data, int count) { MPI_Bcast(data, count, mpi_type(tensor.dtype()), root, MPI_COMM_WORLD); });
#endif
}

std::string ProcessGroup::broadcast(const std::string& text, int root) const {
  if (root < 0 || root >= size_)
    throw Error("broadcast: root " + std::to_string(root) + " out of range [0, " + std::to_string(size_) + ")");
  if (size_ == 1) return text;
  std::string out = text;
#ifdef LATENT_WITH_MPI
  int64_t length = int64_t(text.size());
  MPI_Bcast(&length, 1, MPI_INT64_T, root, MPI_COMM_WORLD);
  if (length > kMaxCount) throw Error("broadcast: string of " + std::to_string(length) + " bytes is too long");
  out.resize(size_t(length));
  MPI_Bcast(out.data(), int(length), MPI_CHAR, root, MPI_COMM_WORLD);
#endif
  return out;
}

void ProcessGroup::all_reduce_sum(const Tensor& tensor) const {
  check_contiguous(tensor, "all_reduce_sum");
  if (size_ == 1) return;
#ifdef LATENT_WITH_MPI
  for_each_chunk(tensor, [&](void* data, int count) {
    MPI_Allreduce(MPI_IN_PLACE, data, count, mpi_type(tensor.dtype()), MPI_SUM, MPI_COMM_WORLD);
  });
#endif
}

std::vector<double> ProcessGroup::all_reduce_sum(std::vector<double> values) const {
  if (size_ == 1 || values.empty()) return values;
#ifdef LATENT_WITH_MPI
  MPI_Allreduce(MPI_IN_PLACE, values.data(), int(values.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#endif
  return values;
}

void ProcessGroup::barrier() const {
#ifdef LATENT_WITH_MPI
  if (size_ > 1) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void ProcessGroup::abort(int code) const {
#ifdef LATENT_WITH_MPI
  if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  (void)code;
}

void broadcast_tensors(const ProcessGroup& group, const std::vector<Tensor>& tensors, int root) {
  for (const Tensor& t : tensors) check_contiguous(t, "broadcast_tensors");
  check_same_on_all_ranks(group, layout_signature(tensors), "broadcast_tensors: the list of tensors");
  for (const Tensor& t : tensors) group.broadcast(t, root);
}

GradientAllReduce::GradientAllReduce(const ProcessGroup& group, std::vector<Tensor> params, int64_t bucket_bytes)
    : group_(group), params_(std::move(params)) {
  if (bucket_bytes <= 0) throw Error("GradientAllReduce: bucket_bytes must be positive, got " + std::to_string(bucket_bytes));
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    if (!p.defined()) throw Error("GradientAllReduce: parameter " + std::to_string(i) + " is undefined");
    if (p.dtype() != kFloat32 && p.dtype() != kFloat64)
      throw Error("GradientAllReduce: parameter " + std::to_string(i) + " " + shape_str(p.shape()) + " is " +
                  dtype_name(p.dtype()) + "; only Float32 and Float64 parameters have gradients");
  }
  check_same_on_all_ranks(group_, layout_signature(params_), "GradientAllReduce: the parameter list");

  // Reverse registration order: the last layers' gradients are ready first in backward.
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    const int64_t p_bytes = p.numel() * int64_t(dtype_size(p.dtype()));
    const bool new_bucket = bucket_params_.empty() || params_[bucket_params_.back().front()].dtype() != p.dtype() ||
                            (bytes > 0 && bytes + p_bytes > bucket_bytes);
    if (new_bucket) bucket_params_.emplace_back(), bytes = 0;
    bucket_params_.back().push_back(k);
    bytes += p_bytes;
  }
  for (const auto& bucket : bucket_params_) {
    int64_t numel = 0;
    for (size_t k : bucket) numel += params_[k].numel();
    bucket_buffers_.push_back(Tensor::empty({numel}, params_[bucket.front()].dtype()));
  }
}

GradientAllReduce::~GradientAllReduce() = default;

void GradientAllReduce::all_reduce() {
  if (group_.size() == 1) return;  // the mean over one rank is the gradient itself
#ifdef LATENT_WITH_MPI
  // How many ranks hold a gradient for each parameter, reduced alongside the buckets.
  std::vector<int> holders(params_.size());
  for (size_t k = 0; k < params_.size(); ++k) holders[k] = params_[k].grad().defined() ? 1 : 0;
  MPI_Request holders_request;
  MPI_Iallreduce(MPI_IN_PLACE, holders.data(), int(holders.size()), MPI_INT, MPI_SUM, MPI_COMM_WORLD, &holders_request);

  std::vector<MPI_Request> requests(bucket_params_.size(), MPI_REQUEST_NULL);
  for (size_t b = 0; b < bucket_params_.size(); ++b) {
    const Tensor& buffer = bucket_buffers_[b];
    dispatch_floating(buffer.dtype(), "GradientAllReduce", [&]<class T>() {
      T* out = buffer.data<T>();
      for (size_t k : bucket_params_[b]) {
        const Tensor& p = params_[k];
        const Tensor grad = p.grad();
        if (!grad.defined()) {
          std::fill_n(out, p.numel(), T(0));
        } else {
          if (grad.dtype() != p.dtype() || grad.shape() != p.shape())
            throw Error("GradientAllReduce: parameter " + std::to_string(k) + " " + shape_str(p.shape()) +
                        " has a gradient " + shape_str(grad.shape()) + " of dtype " + dtype_name(grad.dtype()));
          const Tensor g = grad.contiguous();
          std::memcpy(out, g.data<T>(), size_t(p.numel()) * sizeof(T));
        }
        out += p.numel();
      }
    });
    for_each_chunk(buffer, [&](void* data, int count) {
      if (buffer.numel() > kMaxCount) {  // rare: a bucket beyond 2^30 elements goes blocking, chunk by chunk
        MPI_Allreduce(MPI_IN_PLACE, data, count, mpi_type(buffer.dtype()), MPI_SUM, MPI_COMM_WORLD);
      } else {
        MPI_Iallreduce(MPI_IN_PLACE, data, count, mpi_type(buffer.dtype()), MPI_SUM, MPI_COMM_WORLD, &requests[b]);
      }
    });
    // Open MPI advances non-blocking collectives only inside MPI calls: poke the ones in flight.
    int done = 0;
    MPI_Testall(int(b + 1), requests.data(), &done, MPI_STATUSES_IGNORE);
  }
  MPI_Wait(&holders_request, MPI_STATUS_IGNORE);

  // grad = (sum over ranks) / N, written into the rank's own gradient tensor when it has a usable one.
  for (size_t b = 0; b < bucket_params_.size(); ++b) {
    MPI_Wait(&requests[b], MPI_STATUS_IGNORE);
    const Tensor& buffer = bucket_buffers_[b];
    dispatch_floating(buffer.dtype(), "GradientAllReduce", [&]<class T>() {
      const T* in = buffer.data<T>();
      const T ranks = T(group_.size());
      for (size_t k : bucket_params_[b]) {
        const Tensor& p = params_[k];
        if (holders[k] > 0) {
          Tensor grad = p.grad();
          if (!grad.defined() || !grad.is_contiguous()) {
            grad = Tensor::empty(p.shape(), p.dtype());
            p.set_grad(grad);
          }
          T* out = grad.data<T>();
          for (int64_t i = 0; i < p.numel(); ++i) out[i] = in[i] / ranks;
        }
        in += p.numel();
      }
    });
  }
#endif
}

}  // namespace latent::distributed

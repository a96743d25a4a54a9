// Data parallelism over MPI: the process group of an `mpirun` job (rank, world size, collectives on
// tensors) and the bucketed all-reduce that averages gradients over the ranks, as PyTorch DDP does.
//
//   distributed::ProcessGroup& group = distributed::ProcessGroup::world();   // a group of one outside mpirun
//   distributed::broadcast_tensors(group, model.parameters());          // every rank starts from rank 0's weights
//   distributed::GradientAllReduce reducer(group, model.parameters());
//   loss_on_this_ranks_shard.backward();
//   reducer.all_reduce();                                         // grad = mean over ranks of the grads
//   optim::clip_grad_norm(params, 1.0);  optimizer.step();        // same update on every rank
//
// The header does not include <mpi.h>: programs built against latent need no MPI flags, and the API is
// the same whether or not the library was built with MPI (-Dmpi=disabled). Without MPI, world() is a
// group of one (collectives are no-ops), and a process that mpirun started as one of several ranks gets
// latent::Error "built without MPI" from world() instead of silently training alone.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace latent::distributed {

// True when this liblatent was built with MPI support.
bool mpi_available();

class ProcessGroup {
 public:
  // Every rank of the job this process belongs to (MPI_COMM_WORLD). MPI is initialised on the first
  // call, and only when the process was started by an MPI launcher (mpirun sets OMPI_COMM_WORLD_SIZE /
  // PMIX_RANK); it is finalised at exit. A process started alone gets a group of one without MPI.
  static ProcessGroup& world();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_main() const { return rank_ == 0; }
  // How many ranks share this machine (for the default thread count: cores / local_size).
  int local_size() const { return local_size_; }

  // In place, on a contiguous f32, f64 or i64 tensor: root's values on every rank.
  void broadcast(const Tensor& tensor, int root = 0) const;
  std::string broadcast(const std::string& text, int root = 0) const;
  // In place: the elementwise sum over the ranks, identical on every rank.
  void all_reduce_sum(const Tensor& tensor) const;
  std::vector<double> all_reduce_sum(std::vector<double> values) const;
  void barrier() const;
  // Ends the whole job (every rank) with `code`: for an error one rank cannot share with the others,
  // which would otherwise wait forever in their next collective. Returns only in a group of one.
  void abort(int code) const;

  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

 private:
  ProcessGroup();
  ~ProcessGroup();
  int rank_ = 0, size_ = 1, local_size_ = 1;
  bool owns_runtime_ = false;  // this process initialised MPI, so it finalises it
};

// Root's values of every tensor on every rank (in place; parameters and buffers at the start of a run).
void broadcast_tensors(const ProcessGroup& group, const std::vector<Tensor>& tensors, int root = 0);

// PyTorch DDP's default is 25 MB; a few MB gives several buckets even for the small models trained on a
// CPU, so that packing one bucket overlaps the reduction of the previous one.
inline constexpr int64_t kDefaultBucketBytes = int64_t(4) << 20;

// Averages gradients over the ranks: after all_reduce(), every parameter's gradient is
// (1/N) sum_r grad_r on every rank. With equal shards of a batch and a loss that is a mean over each
// shard, that is the gradient of the whole batch's loss, so N ranks take the step one process would.
//
// Parameters are grouped into buckets of about bucket_bytes in reverse registration order (the order in
// which backward produces their gradients, as DDP does) and per dtype; each bucket is packed into a
// persistent flat buffer and reduced with one non-blocking MPI_Iallreduce while the next is packed.
// A parameter whose gradient is undefined on some ranks (an expert no local token chose) counts as zero
// there; one whose gradient is undefined on every rank stays undefined, so the optimizer skips it
// exactly as a single process would.
class GradientAllReduce {
 public:
  GradientAllReduce(const ProcessGroup& group, std::vector<Tensor> params, int64_t bucket_bytes = kDefaultBucketBytes);
  ~GradientAllReduce();
  GradientAllReduce(const GradientAllReduce&) = delete;
  GradientAllReduce& operator=(const GradientAllReduce&) = delete;

  void all_reduce();

  // The bucket layout: indices into params, in reduction order (for tests and logs).
  const std::vector<std::vector<size_t>>& buckets() const { return bucket_params_; }

 private:
  const ProcessGroup& group_;
  std::vector<Tensor> params_;
  std::vector<std::vector<size_t>> bucket_params_;
  std::vector<Tensor> bucket_buffers_;  // one flat buffer per bucket, in the bucket's dtype
};

}  // namespace latent::distributed

// The process group, tensor collectives and the bucketed gradient all-reduce, over the backend Meson
// chose (backend.hpp: MPI, or a single process).
#include "distributed.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "backend.hpp"

namespace latent::distributed {

namespace {

// The world size an MPI launcher announced in the environment (0 when the process was started alone).
int launcher_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (const char* value = std::getenv(name)) return std::max(1, std::atoi(value));
  return std::getenv("PMIX_RANK") ? 1 : 0;
}

void check_contiguous(const Tensor& tensor, const char* op) {
  if (!tensor.defined()) fail("{}: undefined tensor", op);
  if (!tensor.is_contiguous())
    fail("{}: tensor {} must be contiguous (strides {})", op, shape_str(tensor.shape()), shape_str(tensor.strides()));
}


// Every rank agrees that `signature` (a description of what it is about to exchange) is the same as
// rank 0's, or every rank throws: a mismatch must fail as an error, not as a hang or a truncation.
void check_same_on_all_ranks(const ProcessGroup& group, const std::string& signature, const std::string& what) {
  if (group.size() == 1) return;
  const std::string root_signature = group.broadcast(signature, 0);
  const double mismatches = group.all_reduce_sum({root_signature == signature ? 0.0 : 1.0})[0];
  if (mismatches > 0)
    fail("{} differs between ranks: rank 0 has {}{}", what, root_signature,
         root_signature == signature ? std::string(", some other rank has not")
                                     : fmt::format(", rank {} has {}", group.rank(), signature));
}

std::string layout_signature(const std::vector<Tensor>& tensors) {
  std::string s = fmt::format("{} tensors", tensors.size());
  for (const Tensor& t : tensors) {
    s += ' ';
    s += dtype_name(t.dtype());
    s += shape_str(t.shape());
  }
  return s;
}

}  // namespace

bool mpi_available() { return backend::available(); }

ProcessGroup::ProcessGroup() {
  const int launched = launcher_world_size();
  if (launched == 0) return;  // started alone: a group of one, MPI never touched
  const backend::World world = backend::join(launched);
  rank_ = world.rank, size_ = world.size, local_size_ = world.local_size, owns_runtime_ = world.owns_runtime;
}

ProcessGroup::~ProcessGroup() {
  if (owns_runtime_) backend::leave(backend::World{rank_, size_, local_size_, owns_runtime_});
}

ProcessGroup& ProcessGroup::world() {
  static ProcessGroup group;
  return group;
}

void ProcessGroup::broadcast(const Tensor& tensor, int root) const {
  check_contiguous(tensor, "broadcast");
  if (root < 0 || root >= size_)
    fail("broadcast: root {} out of range [0, {})", root, size_);
  if (size_ == 1) return;
  backend::broadcast_bytes(tensor.raw_data(), tensor.numel() * int64_t(dtype_size(tensor.dtype())), root);
  tensor.bump_version();  // written in place: a backward that saved the old values must refuse
}

std::string ProcessGroup::broadcast(const std::string& text, int root) const {
  if (root < 0 || root >= size_)
    fail("broadcast: root {} out of range [0, {})", root, size_);
  if (size_ == 1) return text;
  int64_t length = int64_t(text.size());
  backend::broadcast_bytes(&length, sizeof length, root);
  std::string out = text;
  out.resize(size_t(length));
  backend::broadcast_bytes(out.data(), length, root);
  return out;
}

void ProcessGroup::all_reduce_sum(const Tensor& tensor) const {
  check_contiguous(tensor, "all_reduce_sum");
  if (size_ == 1) return;
  backend::all_reduce_sum(tensor.raw_data(), tensor.numel(), tensor.dtype());
  tensor.bump_version();
}

std::vector<double> ProcessGroup::all_reduce_sum(std::vector<double> values) const {
  if (size_ == 1 || values.empty()) return values;
  backend::all_reduce_sum(values.data(), int64_t(values.size()), kFloat64);
  return values;
}

void ProcessGroup::barrier() const {
  if (size_ > 1) backend::barrier();
}

void ProcessGroup::abort(int code) const {
  if (size_ > 1) backend::abort(code);
}

void broadcast_tensors(const ProcessGroup& group, const std::vector<Tensor>& tensors, int root) {
  for (const Tensor& t : tensors) check_contiguous(t, "broadcast_tensors");
  check_same_on_all_ranks(group, layout_signature(tensors), "broadcast_tensors: the list of tensors");
  for (const Tensor& t : tensors) group.broadcast(t, root);
}

GradientAllReduce::GradientAllReduce(const ProcessGroup& group, std::vector<Tensor> params, int64_t bucket_bytes)
    : group_(group), params_(std::move(params)) {
  if (bucket_bytes <= 0) fail("GradientAllReduce: bucket_bytes must be positive, got {}", bucket_bytes);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    if (!p.defined()) fail("GradientAllReduce: parameter {} is undefined", i);
    if (p.dtype() != kFloat32 && p.dtype() != kFloat64)
      fail("GradientAllReduce: parameter {} {} is {}; only Float32 and Float64 parameters have gradients", i,
           shape_str(p.shape()), dtype_name(p.dtype()));
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
  // How many ranks hold a gradient for each parameter, reduced alongside the buckets.
  std::vector<int64_t> holders(params_.size());
  for (size_t k = 0; k < params_.size(); ++k) holders[k] = params_[k].grad().defined() ? 1 : 0;
  backend::AsyncSums sums;
  const size_t holders_sum = sums.start(holders.data(), int64_t(holders.size()), kInt64);
  std::vector<size_t> bucket_sums;
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
            fail("GradientAllReduce: parameter {} {} has a gradient {} of dtype {}", k, shape_str(p.shape()),
                 shape_str(grad.shape()), dtype_name(grad.dtype()));
          const Tensor g = grad.contiguous();
          std::memcpy(out, g.data<T>(), size_t(p.numel()) * sizeof(T));
        }
        out += p.numel();
      }
    });
    bucket_sums.push_back(sums.start(buffer.raw_data(), buffer.numel(), buffer.dtype()));
    sums.progress();
  }
  sums.wait(holders_sum);

  // grad = (sum over ranks) / N, written into the rank's own gradient tensor when it has a usable one.
  for (size_t b = 0; b < bucket_params_.size(); ++b) {
    sums.wait(bucket_sums[b]);
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
}

}  // namespace latent::distributed

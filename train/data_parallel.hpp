// Data-parallel training of DeepSeek-V3: each rank runs loss() on its shard of the global batch; the
// gradients are averaged over the ranks, the reported losses are the global batch's, and the
// auxiliary-loss-free bias update sees the expert loads of the whole global batch (summed over ranks),
// as the technical report specifies. The sequence-wise balance loss stays per sequence, on each rank.
//
//   train::DeepSeekV3DataParallel parallel(model, distributed::ProcessGroup::world());   // broadcasts rank 0's state
//   auto losses = model->loss(shard, mtp_lambda);
//   const auto global = parallel.average_losses(losses);   // what one process with the whole batch reports
//   losses.total.backward();
//   parallel.all_reduce_gradients();
//   optim::clip_grad_norm(params, clip);  optimizer.step();  optimizer.zero_grad();
//   parallel.update_expert_bias(gamma);
//
// With equal shards this takes the step one process takes on the whole batch, up to float rounding:
// every term of the loss is a mean over equally sized parts of the batch (ce over B*T tokens, balance
// over B sequences, each MTP depth over B*(T-k) positions), so the mean of the ranks' gradients is the
// whole batch's gradient, and the loads of the bias update are integer counts, summed exactly.
#pragma once
#include <memory>
#include <vector>

#include "../distributed/distributed.hpp"
#include "../models/deepseek_v3.hpp"

namespace latent::train {

class DeepSeekV3DataParallel {
 public:
  // Broadcasts rank 0's parameters and buffers (the gate biases) so every rank starts identical.
  DeepSeekV3DataParallel(std::shared_ptr<models::DeepSeekV3> model, const distributed::ProcessGroup& group,
                         int64_t bucket_bytes = distributed::kDefaultBucketBytes);

  struct GlobalLosses {
    double total = 0, ce = 0, balance = 0, mtp = 0;
  };
  // The mean over ranks of each term of the last loss() on the rank's shard: the global batch's losses.
  // Collective: every rank calls it each step (a NaN on one rank is then seen by all of them).
  GlobalLosses average_losses(const models::DeepSeekV3::Losses& losses) const;

  // After backward: every parameter's gradient becomes the mean over ranks (distributed::GradientAllReduce).
  void all_reduce_gradients();

  // The expert loads of the last loss(), per MoE layer (as model.moe_layers() lists them), summed over
  // the ranks: Int64 [n_routed_experts] each. Collective.
  std::vector<Tensor> global_expert_loads() const;
  // b_i += gamma * sign(mean(c) - c_i) per MoE layer with c the global loads; returns those loads.
  std::vector<Tensor> update_expert_bias(double gamma);

  const distributed::ProcessGroup& group() const { return group_; }
  const distributed::GradientAllReduce& reducer() const { return reducer_; }

 private:
  std::shared_ptr<models::DeepSeekV3> model_;
  const distributed::ProcessGroup& group_;
  distributed::GradientAllReduce reducer_;
};

}  // namespace latent::train

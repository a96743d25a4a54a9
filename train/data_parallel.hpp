// Data-parallel training of any causal LM of the zoo: each rank runs loss_terms() on its shard of
// the global batch; the gradients are averaged over the ranks, the reported losses are the global
// batch's, and a model that updates itself from routing statistics after the optimizer step
// (DeepSeek-V3's auxiliary-loss-free bias update) sees the expert loads of the whole global batch,
// summed over the ranks, as the DeepSeek-V3 technical report specifies. Per-sequence terms (the
// sequence-wise balance loss) stay per sequence, on each rank.
//
//   train::DataParallel parallel(model, distributed::ProcessGroup::world());   // broadcasts rank 0's state
//   auto losses = model->loss_terms(shard, {mtp_lambda});
//   const auto global = parallel.average_losses(losses);   // what one process with the whole batch reports
//   losses.total.backward();
//   parallel.all_reduce_gradients();
//   optim::clip_grad_norm(params, clip);  optimizer.step();  optimizer.zero_grad();
//   parallel.after_optimizer_step(gamma);                  // global loads, then the model's own update
//
// With equal shards this takes the step one process takes on the whole batch, up to float rounding:
// every term of the loss is a mean over equally sized parts of the batch (ce over B*T tokens, balance
// over B sequences, each MTP depth over B*(T-k) positions), so the mean of the ranks' gradients is the
// whole batch's gradient, and the loads of the bias update are integer counts, summed exactly.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../distributed/distributed.hpp"
#include "../models/causal_lm.hpp"

namespace latent::train {

// The losses of the global batch, as plain numbers on every rank.
struct GlobalLosses {
  double total = 0;
  std::vector<std::pair<std::string, double>> terms;  // in the model's order, "ce" first
  double term(const std::string& name) const;          // throws latent::Error for an unknown name
};

class DataParallel {
 public:
  // Broadcasts rank 0's parameters and buffers (e.g. the gate biases) so every rank starts identical.
  DataParallel(std::shared_ptr<models::CausalLM> model, const distributed::ProcessGroup& group,
               int64_t bucket_bytes = distributed::kDefaultBucketBytes);

  // The mean over ranks of the total and of each term of the last loss_terms() on the rank's shard.
  // Collective: every rank calls it each step (a NaN on one rank is then seen by all of them).
  GlobalLosses average_losses(const models::LossTerms& losses) const;

  // After backward: every parameter's gradient becomes the mean over ranks (distributed::GradientAllReduce).
  void all_reduce_gradients();

  // Sums the loads of the model's routing_statistics() over the ranks, in place: afterwards they are
  // the whole global batch's. Collective; nothing to do for a dense model.
  void all_reduce_expert_loads();
  // all_reduce_expert_loads(), then the model's after_optimizer_step(gamma).
  void after_optimizer_step(double bias_gamma);

  const distributed::ProcessGroup& group() const { return group_; }
  const distributed::GradientAllReduce& reducer() const { return reducer_; }

 private:
  std::shared_ptr<models::CausalLM> model_;
  const distributed::ProcessGroup& group_;
  distributed::GradientAllReduce reducer_;
};

}  // namespace latent::train

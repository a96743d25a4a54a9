// DeepSeek-V3 data parallelism: global losses, averaged gradients and global expert loads.
#include "data_parallel.hpp"

#include "../core/factory.hpp"
#include "../models/moe.hpp"

namespace latent::train {

namespace {

std::vector<Tensor> parameters_and_buffers(const models::DeepSeekV3& model) {
  std::vector<Tensor> tensors = model.parameters();
  for (auto& [name, buffer] : model.named_buffers()) tensors.push_back(buffer);
  return tensors;
}

}  // namespace

DeepSeekV3DataParallel::DeepSeekV3DataParallel(std::shared_ptr<models::DeepSeekV3> model, const distributed::ProcessGroup& group,
                                               int64_t bucket_bytes)
    : model_(std::move(model)), group_(group), reducer_(group, model_->parameters(), bucket_bytes) {
  distributed::broadcast_tensors(group_, parameters_and_buffers(*model_), 0);
}

DeepSeekV3DataParallel::GlobalLosses DeepSeekV3DataParallel::average_losses(const models::DeepSeekV3::Losses& losses) const {
  const std::vector<double> sums =
      group_.all_reduce_sum({losses.total.item(), losses.ce.item(), losses.balance.item(), losses.mtp.item()});
  const double ranks = double(group_.size());
  return {sums[0] / ranks, sums[1] / ranks, sums[2] / ranks, sums[3] / ranks};
}

void DeepSeekV3DataParallel::all_reduce_gradients() { reducer_.all_reduce(); }

std::vector<Tensor> DeepSeekV3DataParallel::global_expert_loads() const {
  const auto& routing = model_->last_routing();
  if (routing.empty()) throw Error("global_expert_loads: call loss() first; its expert loads are what the ranks sum");
  // One flat Int64 reduction for all layers: counts add exactly, in any order.
  int64_t total = 0;
  for (const auto& layer : routing) total += layer.loads.numel();
  Tensor flat = Tensor::empty({total}, kInt64);
  int64_t* out = flat.data<int64_t>();
  for (const auto& layer : routing) {
    const std::vector<int64_t> loads = layer.loads.to_vector<int64_t>();
    out = std::copy(loads.begin(), loads.end(), out);
  }
  group_.all_reduce_sum(flat);
  std::vector<Tensor> global;
  int64_t first = 0;
  for (const auto& layer : routing) {
    global.push_back(flat.narrow(0, first, layer.loads.numel()).contiguous().reshape(layer.loads.shape()));
    first += layer.loads.numel();
  }
  return global;
}

std::vector<Tensor> DeepSeekV3DataParallel::update_expert_bias(double gamma) {
  std::vector<Tensor> loads = global_expert_loads();
  const auto layers = model_->moe_layers();
  if (layers.size() != loads.size())
    throw Error("update_expert_bias: " + std::to_string(loads.size()) + " routed layers in the last loss() but the model has " +
                std::to_string(layers.size()) + " MoE layers");
  for (size_t i = 0; i < layers.size(); ++i) layers[i].second->update_expert_bias(gamma, loads[i]);
  return loads;
}

}  // namespace latent::train

// Data parallelism of a causal LM: global losses, averaged gradients and global expert loads.
#include "data_parallel.hpp"

#include <algorithm>

#include "../core/factory.hpp"

namespace latent::train {

namespace {

std::vector<Tensor> parameters_and_buffers(const models::CausalLM& model) {
  std::vector<Tensor> tensors = model.parameters();
  for (auto& [name, buffer] : model.named_buffers()) tensors.push_back(buffer);
  return tensors;
}

}  // namespace

double GlobalLosses::term(const std::string& name) const {
  for (const auto& [term_name, value] : terms)
    if (term_name == name) return value;
  fail("GlobalLosses: no term '{}'", name);
}

DataParallel::DataParallel(std::shared_ptr<models::CausalLM> model, const distributed::ProcessGroup& group,
                           int64_t bucket_bytes)
    : model_(std::move(model)), group_(group), reducer_(group, model_->parameters(), bucket_bytes) {
  distributed::broadcast_tensors(group_, parameters_and_buffers(*model_), 0);
}

GlobalLosses DataParallel::average_losses(const models::LossTerms& losses) const {
  std::vector<double> values = {losses.total.item()};
  for (const auto& [name, value] : losses.terms) values.push_back(value.item());
  if (group_.size() > 1) values = group_.all_reduce_sum(values);
  const double ranks = double(group_.size());
  GlobalLosses global{values[0] / ranks, {}};
  for (size_t i = 0; i < losses.terms.size(); ++i) global.terms.emplace_back(losses.terms[i].first, values[i + 1] / ranks);
  return global;
}

void DataParallel::all_reduce_gradients() { reducer_.all_reduce(); }

void DataParallel::all_reduce_expert_loads() {
  if (group_.size() == 1) return;
  std::vector<Tensor> loads;
  int64_t total = 0;
  for (const models::RoutingStatistics& layer : model_->routing_statistics()) {
    if (!layer.loads.defined() || layer.loads.dtype() != kInt64 || !layer.loads.is_contiguous())
      fail("all_reduce_expert_loads: the loads of {} must be a contiguous Int64 tensor", layer.layer);
    loads.push_back(layer.loads);
    total += layer.loads.numel();
  }
  if (loads.empty()) return;
  // One flat Int64 reduction for all layers: counts add exactly, in any order.
  Tensor flat = Tensor::empty({total}, kInt64);
  int64_t* out = flat.data<int64_t>();
  for (const Tensor& layer : loads) out = std::copy_n(layer.data<int64_t>(), layer.numel(), out);
  group_.all_reduce_sum(flat);
  const int64_t* in = flat.data<int64_t>();
  for (Tensor& layer : loads) {
    std::copy_n(in, layer.numel(), layer.data<int64_t>());
    in += layer.numel();
  }
}

void DataParallel::after_optimizer_step(double bias_gamma) {
  all_reduce_expert_loads();
  model_->after_optimizer_step(bias_gamma);
}

}  // namespace latent::train

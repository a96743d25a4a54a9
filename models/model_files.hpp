// The weights of a Hugging Face model directory: model.safetensors or its shards model-*.safetensors.
#pragma once
#include <map>
#include <string>

#include "../core/tensor.hpp"

namespace latent::models {

// All tensors of dir's model*.safetensors files; `who` names the caller in errors (missing directory,
// no weight file, a tensor present in two shards).
std::map<std::string, Tensor> load_model_tensors(const std::string& dir, const std::string& who);

}  // namespace latent::models

// The weights of a Hugging Face model directory: model.safetensors, or the shards its
// model.safetensors.index.json lists, with FP8 weights dequantised (docs/checkpoints.md).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "../core/tensor.hpp"
#include "../io/fp8_blocks.hpp"

namespace latent::models {

// How save_pretrained writes the weights.
struct SaveOptions {
  // 0: one model.safetensors. Otherwise shards of at most this many tensor bytes (one tensor larger
  // than that gets a shard of its own) listed by model.safetensors.index.json, as Hugging Face's
  // max_shard_size does; a model that fits in one shard is still one model.safetensors.
  uint64_t max_shard_bytes = 0;
};

// All tensors of dir's weight files (io::read_model_weights), F8_E4M3 ones multiplied by their
// block scales of `fp8_block` (config.json's quantization_config; null: none) and the scales
// dropped. `who` names the caller in errors.
std::map<std::string, Tensor> load_model_tensors(const std::string& dir, const std::string& who,
                                                 const io::Fp8BlockSize* fp8_block = nullptr);

// Writes `state` as dir's weights (io::save_model_weights) with Hugging Face's {"format": "pt"}.
void save_model_tensors(const std::string& dir, const std::map<std::string, Tensor>& state, const SaveOptions& options);

}  // namespace latent::models

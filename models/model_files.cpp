// Reading and writing a model directory's weights.
#include "model_files.hpp"

#include "../io/sharded_safetensors.hpp"

namespace latent::models {

std::map<std::string, Tensor> load_model_tensors(const std::string& dir, const std::string& who,
                                                 const io::Fp8BlockSize* fp8_block) {
  io::ModelWeights weights = io::read_model_weights(dir, who);
  io::dequantize_fp8_weights(weights.tensors, weights.file_dtypes, fp8_block, who + ": " + dir);
  return std::move(weights.tensors);
}

void save_model_tensors(const std::string& dir, const std::map<std::string, Tensor>& state, const SaveOptions& options) {
  io::save_model_weights(dir, state, {{"format", "pt"}}, options.max_shard_bytes);
}

}  // namespace latent::models

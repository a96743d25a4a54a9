// FP8 weights with block scales, as DeepSeek-V3 publishes them: a matrix W stored as F8_E4M3 and a
// float32 "W_scale_inv" holding one multiplier per [block_rows, block_cols] tile of W
// (config.json's quantization_config.weight_block_size); docs/checkpoints.md, "FP8 block scales".
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "../core/tensor.hpp"
#include "safetensors.hpp"

namespace latent::io {

// config.json's quantization_config.weight_block_size: [rows, cols] of one scaled tile.
struct Fp8BlockSize {
  int64_t rows = 0, cols = 0;
};

// The companion tensor of an FP8 weight: name + "_scale_inv".
std::string fp8_scale_name(const std::string& weight_name);
bool is_fp8_scale_name(const std::string& name);  // "<weight>_scale_inv"

// W (float32 [R, C], holding the E4M3 codes' values) times its scales (float32 [ceil(R/rows),
// ceil(C/cols)]), in place: element (r, c) is multiplied by scale_inv[r / rows, c / cols]. The last
// tiles of a row or column are partial when R or C is not a multiple of the block. Errors name
// `weight_name` and `source`: a weight that is not a matrix, a scale that is not F32 or of the wrong
// shape.
void apply_fp8_block_scales(Tensor& weight, const Tensor& scale_inv, Fp8BlockSize block,
                            const std::string& weight_name, const std::string& source);

// Every check dequantize_fp8_weights and apply_fp8_block_scales make, on the headers alone
// (`tensors`: each tensor's dtype as the file spells it, and shape), so that a model directory is
// refused before any tensor is read; the same errors.
void check_fp8_weights(const std::map<std::string, SafetensorsTensorInfo>& tensors, const Fp8BlockSize* block,
                       const std::string& source);

// Every F8_E4M3 tensor of `tensors` (file_dtypes gives each one's dtype as stored) multiplied by
// its block scales; the "_scale_inv" entries are removed, so what remains is the model's float
// state. Refused with latent::Error naming `source`: an FP8 tensor without its scale, or without a
// block size (`block` null: config.json has no quantization_config); a "_scale_inv" tensor whose
// weight is absent or not F8_E4M3; the problems apply_fp8_block_scales refuses.
void dequantize_fp8_weights(std::map<std::string, Tensor>& tensors,
                            const std::map<std::string, std::string>& file_dtypes, const Fp8BlockSize* block,
                            const std::string& source);

}  // namespace latent::io

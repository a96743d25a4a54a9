// config.json's "quantization_config" as DeepSeek-V3 publishes it ({"quant_method": "fp8", "fmt":
// "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}): it describes how the
// files store the weights, which latent dequantises to float32 on loading (docs/checkpoints.md).
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "../io/fp8_blocks.hpp"

namespace latent::models {

struct QuantizationConfig {
  std::string quant_method = "fp8", fmt = "e4m3", activation_scheme = "dynamic";
  io::Fp8BlockSize weight_block_size;
};

// The "quantization_config" key of config object `j`: nullopt when absent or null. Anything but FP8
// E4M3 with a positive two-element weight_block_size is refused naming `origin`.
std::optional<QuantizationConfig> read_quantization_config(const nlohmann::json& j, const std::string& origin);

}  // namespace latent::models

// Reading config.json's quantization_config (docs/checkpoints.md, "FP8 block scales").
#include "quantization_config.hpp"

#include "../core/error.hpp"
#include "../io/json.hpp"

namespace latent::models {

std::optional<QuantizationConfig> read_quantization_config(const nlohmann::json& j, const std::string& origin) {
  const auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return std::nullopt;
  const std::string where = origin + " quantization_config";
  QuantizationConfig q;
  q.quant_method = io::required<std::string>(*it, "quant_method", where);
  if (q.quant_method != "fp8")
    fail("{}: key 'quant_method' is '{}'; latent reads 'fp8' block-scaled weights only", where, q.quant_method);
  q.fmt = io::optional<std::string>(*it, "fmt", "e4m3", where);
  if (q.fmt != "e4m3") fail("{}: key 'fmt' is '{}'; latent reads 'e4m3' only", where, q.fmt);
  q.activation_scheme = io::optional<std::string>(*it, "activation_scheme", "dynamic", where);
  const auto block = io::required<std::vector<int64_t>>(*it, "weight_block_size", where);
  if (block.size() != 2 || block[0] <= 0 || block[1] <= 0)
    fail("{}: key 'weight_block_size' must be two positive integers [rows, cols]", where);
  q.weight_block_size = {block[0], block[1]};
  return q;
}

}  // namespace latent::models

// Applying DeepSeek-V3's FP8 block scales to decoded weights (docs/checkpoints.md, "FP8 block scales").
#include "fp8_blocks.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string_view>

namespace latent::io {

namespace {

constexpr std::string_view kScaleSuffix = "_scale_inv";

bool is_scale_name(const std::string& name) {
  return name.size() > kScaleSuffix.size() && name.ends_with(kScaleSuffix);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

const std::string& dtype_of(const std::map<std::string, std::string>& file_dtypes, const std::string& name) {
  static const std::string unknown = "?";
  const auto it = file_dtypes.find(name);
  return it == file_dtypes.end() ? unknown : it->second;
}

}  // namespace

std::string fp8_scale_name(const std::string& weight_name) { return weight_name + std::string(kScaleSuffix); }

void apply_fp8_block_scales(Tensor& weight, const Tensor& scale_inv, Fp8BlockSize block,
                            const std::string& weight_name, const std::string& source) {
  if (block.rows <= 0 || block.cols <= 0)
    fail("{}: FP8 block size [{}, {}] must be positive", source, block.rows, block.cols);
  if (weight.dim() != 2 || weight.dtype() != kFloat32 || !weight.is_contiguous())
    fail("{}: FP8 tensor '{}' has shape [{}]; block scales apply to matrices only", source, weight_name,
         fmt::join(weight.shape(), ", "));
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const Shape expected{ceil_div(rows, block.rows), ceil_div(cols, block.cols)};
  if (scale_inv.dtype() != kFloat32)
    fail("{}: '{}' must be F32 (one float32 scale per block of '{}')", source, fp8_scale_name(weight_name), weight_name);
  if (scale_inv.shape() != expected)
    fail("{}: '{}' has shape [{}] but '{}' [{}, {}] in [{}, {}] blocks needs [{}, {}]", source,
         fp8_scale_name(weight_name), fmt::join(scale_inv.shape(), ", "), weight_name, rows, cols, block.rows,
         block.cols, expected[0], expected[1]);
  const Tensor scales = scale_inv.contiguous();
  const float* scale = scales.data<float>();
  float* w = weight.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* scale_row = scale + (r / block.rows) * expected[1];
    float* w_row = w + r * cols;
    for (int64_t c = 0; c < cols; ++c) w_row[c] *= scale_row[c / block.cols];
  }
}

void dequantize_fp8_weights(std::map<std::string, Tensor>& tensors,
                            const std::map<std::string, std::string>& file_dtypes, const Fp8BlockSize* block,
                            const std::string& source) {
  // Scales first: each must belong to an FP8 weight, so a stray one is an error rather than an
  // unexpected tensor the model reports without saying why it is there.
  for (const auto& [name, tensor] : tensors) {
    if (!is_scale_name(name)) continue;
    const std::string weight_name = name.substr(0, name.size() - kScaleSuffix.size());
    if (!tensors.count(weight_name))
      fail("{}: block scale '{}' has no weight '{}'", source, name, weight_name);
    if (dtype_of(file_dtypes, weight_name) != "F8_E4M3")
      fail("{}: block scale '{}' belongs to '{}', which is {}, not F8_E4M3", source, name, weight_name,
           dtype_of(file_dtypes, weight_name));
    if (dtype_of(file_dtypes, name) != "F32")
      fail("{}: '{}' is {}; block scales must be F32", source, name, dtype_of(file_dtypes, name));
  }
  for (auto& [name, tensor] : tensors) {
    if (dtype_of(file_dtypes, name) != "F8_E4M3") continue;
    const auto scale = tensors.find(fp8_scale_name(name));
    if (scale == tensors.end())
      fail("{}: '{}' is F8_E4M3 but its block scale '{}' is missing", source, name, fp8_scale_name(name));
    if (!block)
      fail("{}: '{}' is F8_E4M3 but config.json has no quantization_config.weight_block_size", source, name);
    apply_fp8_block_scales(tensor, scale->second, *block, name, source);
  }
  std::erase_if(tensors, [](const auto& entry) { return is_scale_name(entry.first); });  // all checked above
}

}  // namespace latent::io

// Applying DeepSeek-V3's FP8 block scales to decoded weights (docs/checkpoints.md, "FP8 block scales").
#include "fp8_blocks.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <string_view>

namespace latent::io {

namespace {

constexpr std::string_view kScaleSuffix = "_scale_inv";

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The shape of the scales of FP8 matrix `weight_name` of `shape`.
Shape scale_shape(const Shape& shape, Fp8BlockSize block, const std::string& weight_name, const std::string& source) {
  if (block.rows <= 0 || block.cols <= 0)
    fail("{}: FP8 block size [{}, {}] must be positive", source, block.rows, block.cols);
  if (shape.size() != 2)
    fail("{}: FP8 tensor '{}' has shape [{}]; block scales apply to matrices only", source, weight_name,
         fmt::join(shape, ", "));
  return {ceil_div(shape[0], block.rows), ceil_div(shape[1], block.cols)};
}

void check_scale(const std::string& scale_dtype, const Shape& scale, const Shape& weight, Fp8BlockSize block,
                 const std::string& weight_name, const std::string& source) {
  const Shape expected = scale_shape(weight, block, weight_name, source);
  if (scale_dtype != "F32")
    fail("{}: '{}' must be F32 (one float32 scale per block of '{}')", source, fp8_scale_name(weight_name),
         weight_name);
  if (scale != expected)
    fail("{}: '{}' has shape [{}] but '{}' [{}, {}] in [{}, {}] blocks needs [{}, {}]", source,
         fp8_scale_name(weight_name), fmt::join(scale, ", "), weight_name, weight[0], weight[1], block.rows,
         block.cols, expected[0], expected[1]);
}

}  // namespace

std::string fp8_scale_name(const std::string& weight_name) { return weight_name + std::string(kScaleSuffix); }

bool is_fp8_scale_name(const std::string& name) {
  return name.size() > kScaleSuffix.size() && name.ends_with(kScaleSuffix);
}

void apply_fp8_block_scales(Tensor& weight, const Tensor& scale_inv, Fp8BlockSize block,
                            const std::string& weight_name, const std::string& source) {
  const Shape expected = scale_shape(weight.shape(), block, weight_name, source);
  if (weight.dtype() != kFloat32 || !weight.is_contiguous())
    fail("{}: FP8 tensor '{}' must be a contiguous float32 matrix to be scaled, got a {} one", source, weight_name,
         dtype_name(weight.dtype()));
  check_scale(scale_inv.dtype() == kFloat32 ? "F32" : dtype_name(scale_inv.dtype()), scale_inv.shape(),
              weight.shape(), block, weight_name, source);
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const Tensor scales = scale_inv.contiguous();
  const float* scale = scales.data<float>();
  float* w = weight.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* scale_row = scale + (r / block.rows) * expected[1];
    float* w_row = w + r * cols;
    for (int64_t c = 0; c < cols; ++c) w_row[c] *= scale_row[c / block.cols];
  }
}

void check_fp8_weights(const std::map<std::string, SafetensorsTensorInfo>& tensors, const Fp8BlockSize* block,
                       const std::string& source) {
  const auto dtype_of = [&](const std::string& name) -> std::string {
    const auto it = tensors.find(name);
    return it == tensors.end() ? "?" : it->second.dtype;
  };
  // Scales first: each must belong to an FP8 weight, so a stray one is an error rather than an
  // unexpected tensor the model reports without saying why it is there.
  for (const auto& [name, info] : tensors) {
    if (!is_fp8_scale_name(name)) continue;
    const std::string weight_name = name.substr(0, name.size() - kScaleSuffix.size());
    if (!tensors.count(weight_name)) fail("{}: block scale '{}' has no weight '{}'", source, name, weight_name);
    if (dtype_of(weight_name) != "F8_E4M3")
      fail("{}: block scale '{}' belongs to '{}', which is {}, not F8_E4M3", source, name, weight_name,
           dtype_of(weight_name));
    if (info.dtype != "F32") fail("{}: '{}' is {}; block scales must be F32", source, name, info.dtype);
  }
  for (const auto& [name, info] : tensors) {
    if (info.dtype != "F8_E4M3") continue;
    const auto scale = tensors.find(fp8_scale_name(name));
    if (scale == tensors.end())
      fail("{}: '{}' is F8_E4M3 but its block scale '{}' is missing", source, name, fp8_scale_name(name));
    if (!block)
      fail("{}: '{}' is F8_E4M3 but config.json has no quantization_config.weight_block_size", source, name);
    check_scale(scale->second.dtype, scale->second.shape, info.shape, *block, name, source);
  }
}

void dequantize_fp8_weights(std::map<std::string, Tensor>& tensors,
                            const std::map<std::string, std::string>& file_dtypes, const Fp8BlockSize* block,
                            const std::string& source) {
  std::map<std::string, SafetensorsTensorInfo> stored;
  for (const auto& [name, tensor] : tensors) {
    const auto dtype = file_dtypes.find(name);
    stored[name] = {dtype == file_dtypes.end() ? "?" : dtype->second, tensor.shape()};
  }
  check_fp8_weights(stored, block, source);
  for (auto& [name, tensor] : tensors)
    if (stored.at(name).dtype == "F8_E4M3")
      apply_fp8_block_scales(tensor, tensors.at(fp8_scale_name(name)), *block, name, source);
  std::erase_if(tensors, [](const auto& entry) { return is_fp8_scale_name(entry.first); });  // all checked above
}

}  // namespace latent::io

// Reading a model directory's weights into a model tensor by tensor, and writing them.
#include "model_files.hpp"

#include <algorithm>

#include "../autograd/grad_mode.hpp"
#include "../core/factory.hpp"
#include "../core/strided.hpp"

namespace latent::models {

namespace {

// Whether a and b (same shape) hold the same values once converted to `dtype`, compared exactly in
// float64 a slice at a time, so that comparing two embeddings costs no copy of either. NaN differs.
bool same_values_as(const Tensor& a, const Tensor& b, DType dtype) {
  constexpr int64_t kSlice = int64_t{1} << 16;
  const int64_t n = a.numel();
  const Tensor flat_a = a.reshape({n}), flat_b = b.reshape({n});
  for (int64_t start = 0; start < n; start += kSlice) {
    const int64_t length = std::min(kSlice, n - start);
    const auto slice = [&](const Tensor& t) { return t.narrow(0, start, length).to(dtype).to(kFloat64).contiguous(); };
    const Tensor x = slice(flat_a), y = slice(flat_b);
    const double *p = x.data<double>(), *q = y.data<double>();
    for (int64_t i = 0; i < length; ++i)
      if (!(p[i] == q[i])) return false;
  }
  return true;
}

}  // namespace

StateDictTensors::StateDictTensors(const std::map<std::string, Tensor>& state) : state_(state) {
  for (const auto& [name, t] : state_) {
    if (!t.defined()) fail("load_checkpoint: tensor '{}' is undefined", name);
    shapes_.emplace(name, t.shape());
  }
}

void StateDictTensors::read_into(const std::string& name, const Tensor& destination) const {
  copy_into(destination, state_.at(name));
}

ModelDirectoryTensors::ModelDirectoryTensors(const std::string& dir, const std::string& who,
                                             const io::Fp8BlockSize* fp8_block)
    : reader_(dir, who), fp8_block_(fp8_block ? *fp8_block : io::Fp8BlockSize{}), source_(who + ": " + dir) {
  io::check_fp8_weights(reader_.tensors(), fp8_block, source_);  // so FP8 tensors imply a block size
  for (const auto& [name, info] : reader_.tensors())
    if (!io::is_fp8_scale_name(name)) shapes_.emplace(name, info.shape);
}

DType ModelDirectoryTensors::dtype(const std::string& name) const {
  return is_fp8(name) ? kFloat32 : reader_.loaded_dtype(name);
}

std::vector<std::string> ModelDirectoryTensors::reading_order(std::vector<std::string> names) const {
  return reader_.in_storage_order(std::move(names));
}

void ModelDirectoryTensors::read_into(const std::string& name, const Tensor& destination) const {
  if (!is_fp8(name)) return reader_.read_into(name, destination);
  const Tensor scale_inv = reader_.read(io::fp8_scale_name(name));  // 1/(block rows * cols) of its size
  Tensor values = destination;
  if (destination.dtype() != kFloat32 || !destination.is_contiguous()) values = empty_uncached(destination.shape());
  reader_.read_into(name, values);
  io::apply_fp8_block_scales(values, scale_inv, fp8_block_, name, source_);
  if (!values.is_same(destination)) copy_into(destination, values);
}

Tensor ModelDirectoryTensors::read(const std::string& name) const {
  const Tensor t = empty_uncached(shapes_.at(name), dtype(name));
  read_into(name, t);
  return t;
}

void load_checkpoint(nn::Module& model, const CheckpointTensors& checkpoint, const CheckpointLayout& layout,
                     const std::string& who) {
  const std::map<std::string, Shape>& shapes = checkpoint.shapes();
  std::map<std::string, Shape> state_shapes;  // what the model's own tensors receive
  std::vector<std::string> duplicates;
  for (const auto& [name, shape] : shapes) {
    const auto duplicate = layout.duplicates.find(name);
    if (duplicate == layout.duplicates.end()) {
      state_shapes.emplace(name, shape);
      continue;
    }
    const std::string& of = duplicate->second.of;
    // Compared after loading, the original's converted value would not be the stored one.
    if (layout.converters.count(of)) fail("{}: '{}' duplicates '{}', which is converted on loading", who, name, of);
    const auto original = shapes.find(of);
    if (original == shapes.end()) fail("{}: '{}' present but '{}' missing", who, name, of);
    if (original->second != shape)
      fail("{}: '{}' {} differs from '{}' {}; {}", who, name, shape_str(shape), of, shape_str(original->second),
           duplicate->second.reason);
    duplicates.push_back(name);
  }
  model.check_state_dict(state_shapes);

  NoGradGuard no_grad;
  const std::map<std::string, Tensor> state = model.state_dict();  // handles on the registered tensors' storage
  const auto require_same = [&](const std::string& name, const Tensor& copy, const Tensor& original) {
    const CheckpointLayout::Duplicate& duplicate = layout.duplicates.at(name);
    if (!same_values_as(copy, original, state.at(duplicate.of).dtype()))
      fail("{}: '{}' differs from '{}'; {}", who, name, duplicate.of, duplicate.reason);
  };
  if (checkpoint.in_memory())
    for (const std::string& name : duplicates)
      require_same(name, checkpoint.read(name), checkpoint.read(layout.duplicates.at(name).of));

  std::vector<std::string> names;
  for (const auto& [name, shape] : state_shapes) names.push_back(name);
  for (const std::string& name : checkpoint.reading_order(std::move(names))) {
    const Tensor& destination = state.at(name);
    const auto converter = layout.converters.find(name);
    if (converter == layout.converters.end())
      checkpoint.read_into(name, destination);
    else
      converter->second(checkpoint.read(name), destination);
    destination.bump_version();
  }

  if (!checkpoint.in_memory())
    for (const std::string& name : checkpoint.reading_order(duplicates))
      require_same(name, checkpoint.read(name), state.at(layout.duplicates.at(name).of));
}

std::map<std::string, Tensor> load_model_tensors(const std::string& dir, const std::string& who,
                                                 const io::Fp8BlockSize* fp8_block) {
  const ModelDirectoryTensors files(dir, who, fp8_block);
  std::vector<std::string> names;
  for (const auto& [name, shape] : files.shapes()) names.push_back(name);
  std::map<std::string, Tensor> tensors;
  for (const std::string& name : files.reading_order(std::move(names))) {
    const Tensor t = Tensor::empty(files.shapes().at(name), files.dtype(name));
    files.read_into(name, t);
    tensors.emplace(name, t);
  }
  return tensors;
}

void save_model_tensors(const std::string& dir, const std::map<std::string, Tensor>& state, const SaveOptions& options) {
  io::save_model_weights(dir, state, {{"format", "pt"}}, options.max_shard_bytes);
}

}  // namespace latent::models

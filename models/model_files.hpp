// The weights of a Hugging Face model directory: model.safetensors, or the shards its
// model.safetensors.index.json lists, with FP8 weights dequantised, streamed into a model tensor by
// tensor after every check on the headers (docs/checkpoints.md).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../io/fp8_blocks.hpp"
#include "../io/sharded_safetensors.hpp"
#include "../nn/init.hpp"
#include "../nn/module.hpp"

namespace latent::models {

// How save_pretrained writes the weights.
struct SaveOptions {
  // 0: one model.safetensors. Otherwise shards of at most this many tensor bytes (one tensor larger
  // than that gets a shard of its own) listed by model.safetensors.index.json, as Hugging Face's
  // max_shard_size does; a model that fits in one shard is still one model.safetensors.
  uint64_t max_shard_bytes = 0;
};

// A checkpoint's tensors: their names and shapes up front, their values one at a time.
class CheckpointTensors {
 public:
  virtual ~CheckpointTensors() = default;
  virtual const std::map<std::string, Shape>& shapes() const = 0;
  virtual DType dtype(const std::string& name) const = 0;  // what read() returns
  // `names` in the order that reads them fastest.
  virtual std::vector<std::string> reading_order(std::vector<std::string> names) const { return names; }
  // Tensor `name` written into `destination` (its shape, any dtype), converted on the way.
  virtual void read_into(const std::string& name, const Tensor& destination) const = 0;
  // Tensor `name` as a value that lives as long as the caller keeps it.
  virtual Tensor read(const std::string& name) const = 0;
  // True when read() hands out tensors already in memory, so comparing two costs nothing.
  virtual bool in_memory() const { return false; }
};

// Tensors already in memory (a state dict); nothing is copied until read_into.
class StateDictTensors : public CheckpointTensors {
 public:
  explicit StateDictTensors(const std::map<std::string, Tensor>& state);
  const std::map<std::string, Shape>& shapes() const override { return shapes_; }
  DType dtype(const std::string& name) const override { return state_.at(name).dtype(); }
  void read_into(const std::string& name, const Tensor& destination) const override;
  Tensor read(const std::string& name) const override { return state_.at(name); }
  bool in_memory() const override { return true; }

 private:
  std::map<std::string, Tensor> state_;  // handles: copying the map copies no tensor data
  std::map<std::string, Shape> shapes_;
};

// The weight files of a model directory (io::ModelWeightsReader: every header read and checked,
// total_size included, when this is made), F8_E4M3 weights multiplied by their block scales of
// `fp8_block` (config.json's quantization_config; null: none, and FP8 weights are refused). The
// scale tensors are not listed: shapes() holds what a model receives. `who` names the caller in errors.
class ModelDirectoryTensors : public CheckpointTensors {
 public:
  ModelDirectoryTensors(const std::string& dir, const std::string& who, const io::Fp8BlockSize* fp8_block);
  const std::map<std::string, Shape>& shapes() const override { return shapes_; }
  DType dtype(const std::string& name) const override;
  std::vector<std::string> reading_order(std::vector<std::string> names) const override;
  // Straight from the mapped file into `destination`; an FP8 weight is scaled in place there when
  // destination is contiguous float32, otherwise in a temporary.
  void read_into(const std::string& name, const Tensor& destination) const override;
  // In memory of its own (empty_uncached): returned to the OS once dropped.
  Tensor read(const std::string& name) const override;

 private:
  bool is_fp8(const std::string& name) const { return reader_.tensors().at(name).dtype == "F8_E4M3"; }

  io::ModelWeightsReader reader_;
  io::Fp8BlockSize fp8_block_;
  std::string source_;  // "<who>: <dir>", as FP8 errors name it
  std::map<std::string, Shape> shapes_;
};

// How a model's checkpoint differs from its state_dict(), tensor by tensor.
struct CheckpointLayout {
  // A tensor the checkpoint stores although the model holds it once (a tied head; DeepSeek-V3's
  // MTP copies of the embedding and head): its value must equal that of state tensor `of`.
  struct Duplicate {
    std::string of;
    std::string reason;  // ends the error when they differ: "'copy' differs from 'of'; <reason>"
  };
  std::map<std::string, Duplicate> duplicates;  // by checkpoint name
  // State tensors stored in another layout (Llama's q/k rows): name -> writes `stored` (the
  // checkpoint's value, already of the state tensor's shape) into `state`.
  std::map<std::string, std::function<void(const Tensor& stored, const Tensor& state)>> converters;
};

// Strict load of `checkpoint` into `model`. First every name and shape is checked, so nothing
// changes on an error: a duplicate whose original is absent or of another shape, then
// model.check_state_dict (missing keys, unexpected keys, shape mismatches, all in one error). Then
// each tensor is read into its registered tensor (through its converter if it has one), one at a
// time in reading order. Duplicates are compared with their originals exactly (as float64): before
// anything is copied when the checkpoint is in memory, else afterwards against the state tensor
// the original went into, as a directory cannot afford to hold both at once — a from_pretrained
// model, discarded on the error, is the only one that sees a partial load then. The memory this
// needs beyond the model is what read_into and read need for one tensor (docs/checkpoints.md,
// "Memory while loading").
void load_checkpoint(nn::Module& model, const CheckpointTensors& checkpoint, const CheckpointLayout& layout,
                     const std::string& who);

// A Model (built from a Config) made from a model directory: config.json, then every weight file's
// header checked before the model exists, then each parameter streamed in (load_checkpoint) through
// the model's checkpoint_layout(). The model skips its random initialisation: every parameter is set.
template <class Model, class Config>
std::shared_ptr<Model> load_pretrained(const std::string& dir, const std::string& who) {
  if (!std::filesystem::is_directory(dir)) fail("{}: '{}' is not a directory", who, dir);
  const Config config = Config::from_json_file((std::filesystem::path(dir) / "config.json").string());
  const auto& quantization = config.quantization_config;
  const ModelDirectoryTensors files(dir, who, quantization ? &quantization->weight_block_size : nullptr);
  const auto model = [&] {
    const nn::init::SkipInitGuard skip;
    return std::make_shared<Model>(config);
  }();
  load_checkpoint(*model, files, model->checkpoint_layout(), who);
  return model;
}

// All tensors of dir's weight files (as ModelDirectoryTensors gives them) in one map. `who` names
// the caller in errors. Holds the whole checkpoint: load_checkpoint streams instead.
std::map<std::string, Tensor> load_model_tensors(const std::string& dir, const std::string& who,
                                                 const io::Fp8BlockSize* fp8_block = nullptr);

// Writes `state` as dir's weights (io::save_model_weights) with Hugging Face's {"format": "pt"}.
void save_model_tensors(const std::string& dir, const std::map<std::string, Tensor>& state, const SaveOptions& options);

}  // namespace latent::models

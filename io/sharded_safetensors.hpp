// The weight files of a Hugging Face model directory: one model.safetensors, or shards
// model-00001-of-0000N.safetensors listed by model.safetensors.index.json ({"metadata":
// {"total_size": bytes}, "weight_map": {tensor: shard file}}); read tensor by tensor after every
// cross-file check, written so that an error leaves the directory as it was (docs/checkpoints.md,
// "Sharded directories").
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/tensor.hpp"
#include "safetensors.hpp"

namespace latent::io {

inline constexpr std::string_view kSingleWeightsFile = "model.safetensors";
inline constexpr std::string_view kShardIndexFile = "model.safetensors.index.json";

struct ShardIndex {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name (a plain name in the directory)
  std::optional<uint64_t> total_size;             // metadata.total_size: bytes of tensor data, as HF counts them
  std::optional<std::string> save_id;             // metadata.save_id: written by latent, shared with its shards
};

// Parses an index strictly: weight_map must map strings to plain file names (no '/', not "." or
// "..": a shard cannot lie outside the directory); duplicate keys are refused by the JSON parser.
// `source` names the file in errors.
ShardIndex parse_shard_index(std::string_view text, const std::string& source);

// The weight files of directory `dir`, opened to be read tensor by tensor: the shards its
// model.safetensors.index.json lists when it has one (and nothing else), else its
// model.safetensors. Every file is mapped and its header checked when the reader is made, with
// every cross-file check below, so a directory that opens reads without error. Errors
// (latent::Error starting with `who`): no weights, a shard the index names missing or unreadable,
// a listed tensor absent from its shard, a tensor in a shard the index does not place it in (so
// also one stored in two shards) or not listed at all, a shard from another save than the index
// (an interrupted save_model_weights), a dtype latent cannot load. metadata.total_size is read but
// not compared with the files (io/sharded_safetensors.cpp says why).
class ModelWeightsReader {
 public:
  ModelWeightsReader(const std::string& dir, const std::string& who);

  // Every tensor of the directory as its file's header states it (offsets are within that file).
  const std::map<std::string, SafetensorsTensorInfo>& tensors() const { return tensors_; }
  // `names` (tensors of the directory) in the order the files store them: file by file, by offset
  // within a file, the order that reads each mapping front to back.
  std::vector<std::string> in_storage_order(std::vector<std::string> names) const;
  DType loaded_dtype(const std::string& name) const;  // as MappedSafetensors::loaded_dtype
  Tensor read(const std::string& name) const;         // as MappedSafetensors::read
  void read_into(const std::string& name, const Tensor& destination) const;  // as MappedSafetensors::read_into

 private:
  const MappedSafetensors& file_of(const std::string& name) const;

  std::vector<MappedSafetensors> files_;
  std::map<std::string, SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t> file_index_;  // tensor -> its entry of files_
};

struct ModelWeights {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> file_dtypes;  // as SafetensorsFile::file_dtypes
};

// Every tensor of directory `dir`, read through ModelWeightsReader (its errors). FP8 tensors are
// returned as their codes' values with file_dtypes saying so (io/fp8_blocks.hpp applies the scales).
ModelWeights read_model_weights(const std::string& dir, const std::string& who);

// Writes `tensors` into `dir` (which must exist) as model.safetensors, or, when max_shard_bytes > 0
// and they do not fit in one shard of that many tensor bytes, as model-0000i-of-0000N.safetensors
// (tensors in name order, a shard closed before it would exceed the limit; a larger tensor gets a
// shard of its own) plus the index. Every shard's metadata is `metadata` plus the index's save_id.
// The new files are written in a staging directory first, so an error while writing leaves `dir`
// untouched; they are then renamed in, index first, and the weight files of an earlier save that
// the new one does not use (model.safetensors, shards, index) are removed, so a later read sees
// the new weights only. A crash during the renames leaves shards the index's save_id refuses.
void save_model_weights(const std::string& dir, const std::map<std::string, Tensor>& tensors,
                        const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes = 0);

}  // namespace latent::io

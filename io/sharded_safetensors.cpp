// Model directories' weight files: the shard index, reading shards tensor by tensor after the cross-file checks,
// and writing one file or shards through a staging directory (docs/checkpoints.md, "Sharded directories").
#include "sharded_safetensors.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>
#include <vector>

#include "../core/dtype.hpp"
#include "atomic_file.hpp"
#include "crash_points.hpp"
#include "json.hpp"
#include "safetensors.hpp"

namespace latent::io {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSaveIdKey = "save_id";
constexpr std::string_view kStagingPrefix = ".model-weights";

// A shard must be a file of the directory itself: a name with a separator or a dot-dot could reach
// any file the process can read.
void check_plain_file_name(const std::string& file, const std::string& tensor, const std::string& source) {
  if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
      file.find('\0') != std::string::npos)
    fail("{}: weight_map['{}'] = '{}' is not a plain file name inside the directory", source, tensor, file);
}

// Whether `path` exists. A path the system cannot look up at all (a name longer than the file
// system allows, a directory without search permission) is a latent::Error naming it, not a
// std::filesystem_error escaping the reader.
bool path_exists(const fs::path& path, const std::string& who) {
  std::error_code error;
  const bool found = fs::exists(path, error);
  if (error) fail("{}: cannot look up '{}': {}", who, path.string(), error.message());
  return found;
}

std::string shard_file_name(size_t index, size_t count) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

std::string new_save_id() {
  std::random_device device;
  const uint64_t id = (static_cast<uint64_t>(device()) << 32) ^ device();
  return fmt::format("{:016x}", id);
}

uint64_t tensor_bytes(const Tensor& t) { return static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype()); }

ShardIndex shard_index_from_json(const nlohmann::json& root, const std::string& source) {
  if (!root.is_object()) fail("{}: an index must be a JSON object, got {}", source, describe_json_value(root));
  ShardIndex index;
  index.weight_map = required<std::map<std::string, std::string>>(root, "weight_map", source);
  for (const auto& [tensor, file] : index.weight_map) check_plain_file_name(file, tensor, source);
  const nlohmann::json metadata = optional<nlohmann::json>(root, "metadata", nlohmann::json::object(), source);
  if (!metadata.is_object()) fail("{}: key 'metadata' must be an object, got {}", source, describe_json_value(metadata));
  if (metadata.contains("total_size") && !metadata["total_size"].is_null())
    index.total_size = json_as<uint64_t>(metadata["total_size"], "key 'metadata.total_size'", source);
  if (metadata.contains(kSaveIdKey))
    index.save_id = json_as<std::string>(metadata[kSaveIdKey], "key 'metadata.save_id'", source);
  return index;
}

// The index of `dir`, if it has one that parses; used only to find what an earlier save left.
std::optional<ShardIndex> previous_index(const fs::path& dir) {
  const fs::path path = dir / kShardIndexFile;
  std::error_code error;
  if (!fs::is_regular_file(path, error)) return std::nullopt;
  try {
    return shard_index_from_json(read_json_file(path.string()), path.string());
  } catch (const Error&) {
    return ShardIndex{};  // unreadable: the file itself still goes, the shards it named cannot be known
  }
}

// Removes what an earlier save left that the new one does not use. `keep` are the new files.
void remove_stale_weight_files(const fs::path& dir, const std::optional<ShardIndex>& old_index,
                               const std::set<std::string>& keep) {
  std::set<std::string> stale;
  if (old_index) {
    stale.insert(std::string(kShardIndexFile));
    for (const auto& [tensor, file] : old_index->weight_map) stale.insert(file);
  }
  stale.insert(std::string(kSingleWeightsFile));
  for (const std::string& file : stale) {
    // Only weight files: an index naming config.json or optimizer.safetensors as a shard must not
    // make a save delete them.
    const bool weight_file = file == kShardIndexFile || (file.starts_with("model") && file.ends_with(".safetensors"));
    if (keep.count(file) || !weight_file) continue;
    std::error_code error;
    fs::remove(dir / file, error);
    if (error) fail("save: {}: cannot remove the stale weight file: {}", (dir / file).string(), error.message());
  }
}

}  // namespace

ShardIndex parse_shard_index(std::string_view text, const std::string& source) {
  return shard_index_from_json(parse_json(text, source), source);
}

ModelWeightsReader::ModelWeightsReader(const std::string& dir_name, const std::string& who) {
  const fs::path dir(dir_name), index_path = dir / kShardIndexFile, single = dir / kSingleWeightsFile;
  std::error_code error;
  if (!fs::is_directory(dir, error)) fail("{}: '{}' is not a directory", who, dir_name);
  const auto add_file = [&](const fs::path& path) -> const MappedSafetensors& {
    files_.emplace_back(path.string());
    check_loadable_dtypes(files_.back().header(), path.string());
    return files_.back();
  };
  if (!path_exists(index_path, who)) {
    if (!path_exists(single, who)) fail("{}: no {} or {} in '{}'", who, kSingleWeightsFile, kShardIndexFile, dir_name);
    tensors_ = add_file(single).header().tensors;
    for (const auto& [tensor, info] : tensors_) file_index_.emplace(tensor, 0);
    return;
  }
  const std::string index_source = index_path.string();
  const ShardIndex index = shard_index_from_json(read_json_file(index_source), index_source);
  std::set<std::string> shards;
  for (const auto& [tensor, file] : index.weight_map) shards.insert(file);
  files_.reserve(shards.size());
  for (const std::string& shard : shards) {
    const fs::path path = dir / shard;
    if (!path_exists(path, who)) fail("{}: {} lists shard '{}', which is missing", who, index_source, shard);
    const SafetensorsHeader& header = add_file(path).header();
    if (index.save_id) {
      const auto id = header.metadata.find(kSaveIdKey);
      if (id == header.metadata.end() || id->second != *index.save_id)
        fail("{}: shard '{}' is not from the save that wrote {} (save_id {} vs {}): an interrupted save?", who,
             shard, index_source, id == header.metadata.end() ? "none" : id->second, *index.save_id);
    }
    for (const auto& [tensor, info] : header.tensors) {
      const auto listed = index.weight_map.find(tensor);
      if (listed == index.weight_map.end())
        fail("{}: shard '{}' holds tensor '{}', which {} does not list", who, shard, tensor, index_source);
      // The map names one shard per tensor (a repeated key is a JSON error), so a tensor stored in
      // two shards is in one the map does not name for it.
      if (listed->second != shard)
        fail("{}: tensor '{}' is in shard '{}' but {} places it in '{}' (stored twice, or misplaced)", who, tensor,
             shard, index_source, listed->second);
      tensors_.emplace(tensor, info);
      file_index_.emplace(tensor, files_.size() - 1);
    }
  }
  for (const auto& [tensor, shard] : index.weight_map)
    if (!tensors_.count(tensor))
      fail("{}: {} lists tensor '{}' in shard '{}', which does not hold it", who, index_source, tensor, shard);
  // metadata.total_size is not compared with the shards: Hugging Face sums the sizes of the saved
  // tensors' storages in memory (a view counts its whole storage) and conversion scripts write
  // other numbers or none, so published indices disagree with their files while every tensor is
  // where the map says; Hugging Face's loaders do not read it either. The checks above are the
  // ones that find an index written for other shards.
}

const MappedSafetensors& ModelWeightsReader::file_of(const std::string& name) const {
  const auto it = file_index_.find(name);
  if (it == file_index_.end()) fail("model weights: no tensor '{}'", name);
  return files_[it->second];
}

std::vector<std::string> ModelWeightsReader::in_storage_order(std::vector<std::string> names) const {
  const auto place = [&](const std::string& name) {
    return std::pair(file_index_.at(name), tensors_.at(name).data_begin);
  };
  for (const std::string& name : names) file_of(name);  // refuses an unknown name before sorting
  std::sort(names.begin(), names.end(),
            [&](const std::string& a, const std::string& b) { return place(a) < place(b); });
  return names;
}

DType ModelWeightsReader::loaded_dtype(const std::string& name) const { return file_of(name).loaded_dtype(name); }

Tensor ModelWeightsReader::read(const std::string& name) const { return file_of(name).read(name); }

void ModelWeightsReader::read_into(const std::string& name, const Tensor& destination) const {
  file_of(name).read_into(name, destination);
}

ModelWeights read_model_weights(const std::string& dir, const std::string& who) {
  const ModelWeightsReader reader(dir, who);
  std::vector<std::string> names;
  for (const auto& [name, info] : reader.tensors()) names.push_back(name);
  ModelWeights weights;
  for (const std::string& name : reader.in_storage_order(std::move(names))) {
    weights.tensors.emplace(name, reader.read(name));
    weights.file_dtypes.emplace(name, reader.tensors().at(name).dtype);
  }
  return weights;
}

void save_model_weights(const std::string& dir_name, const std::map<std::string, Tensor>& tensors,
                        const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes) {
  const fs::path dir(dir_name);
  if (!fs::is_directory(dir)) fail("save: '{}' is not a directory", dir_name);
  const std::optional<ShardIndex> old_index = previous_index(dir);
  // Staging directories a crashed save left ("<name>.tmp.<pid>", io/atomic_file.hpp) hold nothing of value.
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_directory() && entry.path().filename().string().starts_with(kStagingPrefix) &&
        is_temporary_name(entry.path().filename().string()))
      fs::remove_all(entry.path());

  // Shards in name order, each closed before a tensor would take it past the limit.
  std::vector<std::map<std::string, Tensor>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const auto& [name, tensor] : tensors) {
    const uint64_t nbytes = tensor.defined() ? tensor_bytes(tensor) : 0;
    if (max_shard_bytes > 0 && !shards.back().empty() && shard_bytes + nbytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace(name, tensor);
    shard_bytes += nbytes;
    total_bytes += nbytes;
  }

  if (shards.size() == 1) {  // as Hugging Face does: a model that fits one shard is one file
    save_safetensors((dir / kSingleWeightsFile).string(), tensors, metadata);
    remove_stale_weight_files(dir, old_index, {std::string(kSingleWeightsFile)});
    sync_directory(dir_name);
    return;
  }

  const std::string save_id = new_save_id();
  std::map<std::string, std::string> shard_metadata = metadata;
  shard_metadata[kSaveIdKey] = save_id;
  nlohmann::json index = {{"metadata", {{"total_size", total_bytes}, {kSaveIdKey, save_id}}},
                          {"weight_map", nlohmann::json::object()}};
  std::vector<std::string> files;
  for (size_t i = 0; i < shards.size(); ++i) {
    files.push_back(shard_file_name(i, shards.size()));
    for (const auto& [name, tensor] : shards[i]) index["weight_map"][name] = files.back();
  }

  const fs::path staging = dir / fmt::format("{}.tmp.{}", kStagingPrefix, ::getpid());
  try {
    fs::create_directory(staging);
    for (size_t i = 0; i < shards.size(); ++i) save_safetensors((staging / files[i]).string(), shards[i], shard_metadata);
    write_json_file_atomic((staging / kShardIndexFile).string(), index);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    try {
      throw;
    } catch (const fs::filesystem_error& e) {
      fail("save: {}: cannot stage the new weight files: {}", dir_name, e.what());
    }
  }
  // The index goes first: from here on it names this save's id, so any shard of an earlier save
  // still in place (a crash before the last rename) is refused rather than read as part of this one.
  std::set<std::string> keep(files.begin(), files.end());
  keep.insert(std::string(kShardIndexFile));
  try {
    fs::rename(staging / kShardIndexFile, dir / kShardIndexFile);
    crash_point("renamed the index into place", (dir / kShardIndexFile).string());
    for (const std::string& file : files) fs::rename(staging / file, dir / file);
  } catch (const fs::filesystem_error& e) {
    fail("save: {}: cannot move the new weight files into place: {}", dir_name, e.what());
  }
  remove_stale_weight_files(dir, old_index, keep);
  std::error_code ignored;  // an empty leftover directory is harmless; the next save removes it
  fs::remove_all(staging, ignored);
  sync_directory(dir_name);
}

}  // namespace latent::io

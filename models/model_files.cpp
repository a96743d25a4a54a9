// Collecting a model directory's safetensors shards.
#include "model_files.hpp"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "../io/safetensors.hpp"

namespace latent::models {

std::map<std::string, Tensor> load_model_tensors(const std::string& dir, const std::string& who) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) fail("{}: '{}' is not a directory", who, dir);
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".safetensors" && entry.path().filename().string().rfind("model", 0) == 0)
      files.push_back(entry.path());
  if (files.empty()) fail("{}: no model*.safetensors in '{}'", who, dir);
  std::sort(files.begin(), files.end());
  std::map<std::string, Tensor> state;
  for (const auto& file : files)
    for (auto& [name, t] : io::load_safetensors(file.string()))
      if (!state.emplace(name, t).second) fail("{}: tensor '{}' appears in two files of '{}'", who, name, dir);
  return state;
}

}  // namespace latent::models

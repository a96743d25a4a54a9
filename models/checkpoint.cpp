// Checkpoint staging, commit and recovery.
#include "checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "../nn/io/atomic_file.hpp"
#include "../nn/io/json.hpp"

namespace latent::models {
namespace fs = std::filesystem;
namespace {

constexpr const char* kStaging = ".staging";
constexpr const char* kCommit = "COMMITTED";

void sync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) throw Error("checkpoint: cannot open directory '" + dir.string() + "'");
  ::fsync(fd);
  ::close(fd);
}

// Moves every staged file into place, then drops the staging directory (the marker with it). Safe to
// repeat after a crash part-way: the marker stays until the last file has moved.
void roll_forward(const fs::path& dir) {
  const fs::path staging = dir / kStaging;
  std::vector<fs::path> staged;
  for (const auto& entry : fs::directory_iterator(staging))
    if (entry.is_regular_file() && entry.path().filename() != kCommit) staged.push_back(entry.path());
  std::sort(staged.begin(), staged.end());
  for (const fs::path& file : staged) fs::rename(file, dir / file.filename());
  sync_directory(dir);
  fs::remove_all(staging);
  sync_directory(dir);
}

}  // namespace

void recover_checkpoint(const std::string& dir_name) {
  const fs::path dir(dir_name), staging = dir / kStaging;
  if (!fs::exists(staging)) return;
  if (fs::exists(staging / kCommit)) roll_forward(dir);
  else fs::remove_all(staging);  // the save never committed: the previous checkpoint stands
}

void save_checkpoint(const std::string& dir_name, const DeepSeekV3& model, const optim::Optimizer& optimizer,
                     const TrainerState& state, const TrainingLog& log) {
  const fs::path dir(dir_name), staging = dir / kStaging;
  fs::create_directories(dir);
  recover_checkpoint(dir_name);
  fs::create_directories(staging);
  model.save_pretrained(staging.string());
  optimizer.save((staging / "optimizer.safetensors").string());
  log.write_csv((staging / "metrics.csv").string());
  log.write_svg((staging / "loss.svg").string());
  nlohmann::json j = {{"step", state.step},
                      {"sampler", {{"seed", state.sampler_seed}, {"offset", state.sampler_offset}}},
                      {"tokens_seen", state.tokens_seen},
                      {"elapsed_seconds", state.elapsed_seconds},
                      {"hyperparameters", state.hyperparameters}};
  io::write_json_file_atomic((staging / "trainer_state.json").string(), j);
  sync_directory(staging);
  io::write_file_atomic((staging / kCommit).string(), std::to_string(state.step) + "\n");  // the commit point
  roll_forward(dir);
}

bool is_checkpoint(const std::string& dir_name) {
  if (!fs::is_directory(dir_name)) return false;
  recover_checkpoint(dir_name);
  for (const char* name : {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    if (!fs::is_regular_file(fs::path(dir_name) / name)) return false;
  return true;
}

TrainerState load_trainer_state(const std::string& dir_name) {
  if (!is_checkpoint(dir_name))
    throw Error("checkpoint: '" + dir_name + "' is not a checkpoint (needs config.json, model.safetensors, "
                "optimizer.safetensors and trainer_state.json)");
  const std::string path = (fs::path(dir_name) / "trainer_state.json").string();
  const nlohmann::json j = io::read_json_file(path);
  TrainerState s;
  s.step = io::required<int64_t>(j, "step", path);
  const nlohmann::json sampler = io::required<nlohmann::json>(j, "sampler", path);
  s.sampler_seed = io::required<uint64_t>(sampler, "seed", path + " sampler");
  s.sampler_offset = io::required<uint64_t>(sampler, "offset", path + " sampler");
  s.tokens_seen = io::optional<int64_t>(j, "tokens_seen", 0, path);
  s.elapsed_seconds = io::optional<double>(j, "elapsed_seconds", 0.0, path);
  s.hyperparameters = io::optional<nlohmann::json>(j, "hyperparameters", nlohmann::json::object(), path);
  if (s.step < 0) throw Error(path + ": key 'step' must be >= 0");
  return s;
}

}  // namespace latent::models

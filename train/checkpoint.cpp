// Checkpoint staging, commit, roll-forward and recovery (the protocol is stated in checkpoint.hpp).
#include "checkpoint.hpp"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "../io/atomic_file.hpp"
#include "../io/crash_points.hpp"
#include "../io/json.hpp"
#include "fault_injection.hpp"

namespace latent::train {
namespace fs = std::filesystem;
namespace {

constexpr const char* kStaging = ".staging";
constexpr const char* kCommitMarker = "COMMITTED";
constexpr const char* kRequiredFiles[] = {"config.json", "model.safetensors", "optimizer.safetensors",
                                          "trainer_state.json"};

// Runs one filesystem step, turning std::filesystem's exceptions into latent::Error naming the op.
template <class Step>
auto checked(const char* op, const std::string& dir, Step&& step) {
  try {
    return step();
  } catch (const fs::filesystem_error& e) {
    fail("{}: '{}': {}", op, dir, e.what());
  }
}

// Creates dir and its missing parents, syncing each new entry's parent so the directory itself
// survives a power loss (the files later renamed into it would otherwise have nowhere to be).
void create_directories_durably(fs::path dir) {
  dir = fs::absolute(dir).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "runs/x/" names "runs/x"
  std::vector<fs::path> missing;
  for (fs::path p = dir; !fs::exists(p) && p != p.parent_path(); p = p.parent_path()) missing.push_back(p);
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    fs::create_directory(*it);
    io::sync_directory(it->parent_path().string());
  }
  if (!fs::is_directory(dir)) fail("save_checkpoint: '{}' exists and is not a directory", dir.string());
}

// Deletes the staging directory, the commit marker last: until the marker is gone a crash here
// still reads as "committed", and then nothing is left in S to move.
void remove_staging(const fs::path& dir) {
  const fs::path staging = dir / kStaging;
  if (!fs::is_directory(staging)) {
    fs::remove(staging);
  } else {
    for (const auto& entry : fs::directory_iterator(staging))
      if (entry.path().filename() != kCommitMarker) fs::remove_all(entry.path());
    if (fs::remove(staging / kCommitMarker)) io::crash_point("removed the commit marker", (staging / kCommitMarker).string());
    fs::remove(staging);
  }
  io::crash_point("removed the staging directory", staging.string());
  io::sync_directory(dir.string());
}

// Steps 4 and 5 of the protocol. Every staged file is complete (written atomically before the
// commit), so moving them in any order and resuming the moves after a crash is safe.
void roll_forward(const fs::path& dir) {
  const fs::path staging = dir / kStaging;
  std::vector<fs::path> staged;
  for (const auto& entry : fs::directory_iterator(staging)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name != kCommitMarker && !io::is_temporary_name(name)) staged.push_back(entry.path());
  }
  std::sort(staged.begin(), staged.end());
  for (const fs::path& file : staged) {
    fs::rename(file, dir / file.filename());
    io::crash_point("moved into the checkpoint", (dir / file.filename()).string());
  }
  io::sync_directory(dir.string());  // the moves are durable before the marker can disappear
  io::crash_point("synced", dir.string());
  remove_staging(dir);
}

void write_trainer_state(const std::string& path, const TrainerState& state) {
  const nlohmann::json j = {{"step", state.step},
                            {"sampler", {{"seed", state.sampler_seed}, {"offset", state.sampler_offset}}},
                            {"tokens_seen", state.tokens_seen},
                            {"elapsed_seconds", state.elapsed_seconds},
                            {"hyperparameters", state.hyperparameters}};
  io::write_json_file_atomic(path, j);
}

}  // namespace

void recover_checkpoint(const std::string& dir_name) {
  checked("recover_checkpoint", dir_name, [&] {
    const fs::path dir(dir_name), staging = dir / kStaging;
    if (!fs::exists(fs::symlink_status(staging))) return;
    if (fs::is_directory(staging) && fs::exists(staging / kCommitMarker)) roll_forward(dir);
    else remove_staging(dir);  // the save never committed: the previous checkpoint stands
  });
}

void save_checkpoint(const std::string& dir_name, const models::CausalLM& model, const optim::Optimizer& optimizer,
                     const TrainerState& state, const TrainingLog& log, const tokenizer::Tokenizer* tokenizer) {
  const io::CrashPoints crash_points(crash_point_for_this_save());
  const fs::path dir(dir_name), staging = dir / kStaging;
  checked("save_checkpoint", dir_name, [&] {
    create_directories_durably(dir);
    recover_checkpoint(dir_name);
    fs::create_directory(staging);
    io::sync_directory(dir.string());
    io::crash_point("created", staging.string());
    try {
      model.save_pretrained(staging.string());
      optimizer.save((staging / "optimizer.safetensors").string());
      log.write_csv((staging / "metrics.csv").string());
      log.write_svg((staging / "loss.svg").string());
      write_trainer_state((staging / "trainer_state.json").string(), state);
      if (tokenizer) tokenizer->save((staging / "tokenizer.json").string());
      io::write_file_atomic((staging / kCommitMarker).string(), std::to_string(state.step) + "\n");  // the commit
    } catch (...) {
      // Without the marker the save did not happen: DIR is untouched, and the half-written staging
      // (it may be large) goes now rather than at the next recovery. With it (only a failed fsync of
      // S after the commit rename), recovery will finish the save.
      std::error_code ignored;
      if (!fs::exists(staging / kCommitMarker, ignored)) fs::remove_all(staging, ignored);
      throw;
    }
    roll_forward(dir);
  });
}

bool is_checkpoint(const std::string& dir_name) {
  if (!fs::is_directory(dir_name)) return false;
  recover_checkpoint(dir_name);
  for (const char* name : kRequiredFiles)
    if (!fs::is_regular_file(fs::path(dir_name) / name)) return false;
  return true;
}

TrainerState load_trainer_state(const std::string& dir_name) {
  if (!is_checkpoint(dir_name))
    fail("checkpoint: '{}' is not a checkpoint (needs config.json, model.safetensors, "
         "optimizer.safetensors and trainer_state.json)",
         dir_name);
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
  if (s.step < 0) fail("{}: key 'step' must be >= 0", path);
  return s;
}

std::optional<tokenizer::Tokenizer> load_tokenizer(const std::string& dir_name) {
  const fs::path dir(dir_name), tokenizer_json = dir / "tokenizer.json", state_json = dir / "trainer_state.json";
  if (!fs::is_regular_file(tokenizer_json)) return std::nullopt;
  if (fs::is_regular_file(state_json)) {
    const nlohmann::json state = io::read_json_file(state_json.string());
    const nlohmann::json hyperparameters = io::optional<nlohmann::json>(state, "hyperparameters", nlohmann::json::object(),
                                                                        state_json.string());
    if (io::optional<std::string>(hyperparameters, "tokenizer", "bytes", state_json.string() + " hyperparameters") == "bytes")
      return std::nullopt;
  }
  return tokenizer::Tokenizer::from_file(tokenizer_json.string());
}

}  // namespace latent::train

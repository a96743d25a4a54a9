// Training checkpoints: a Hugging Face model directory (config.json, model.safetensors) plus
// optimizer.safetensors, trainer_state.json, metrics.csv and loss.svg. A save writes every file into
// DIR/.staging, then commits by creating DIR/.staging/COMMITTED atomically, then moves the files over
// the old ones and removes DIR/.staging. A crash at any moment leaves either the previous or the new
// checkpoint, never a mix: recovery rolls a committed save forward and discards an uncommitted one.
// Readers that do not recover (from_pretrained) see a loadable model at every moment after the first save.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "../optim/optimizer.hpp"
#include "deepseek_v3.hpp"
#include "training_log.hpp"

namespace latent::models {

struct TrainerState {
  int64_t step = 0;             // optimizer steps taken
  uint64_t sampler_seed = 0, sampler_offset = 0;  // the batch sampler's generator
  int64_t tokens_seen = 0;
  double elapsed_seconds = 0;
  nlohmann::json hyperparameters = nlohmann::json::object();  // what the run was started with
};

void save_checkpoint(const std::string& dir, const DeepSeekV3& model, const optim::Optimizer& optimizer,
                     const TrainerState& state, const TrainingLog& log);

// True when dir holds a complete checkpoint (after recovering an interrupted save).
bool is_checkpoint(const std::string& dir);
// Completes a committed but unfinished save, or discards an uncommitted one.
void recover_checkpoint(const std::string& dir);
TrainerState load_trainer_state(const std::string& dir);  // recovers first

}  // namespace latent::models

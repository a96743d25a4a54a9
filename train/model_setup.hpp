// The models a training run builds, by family: a preset, a config.json (dispatched on its
// "model_type"), or a checkpoint's; the checks a model must pass before it trains on bytes; and the
// lines of the run's summary that describe it. The one place the Trainer tells the zoo's models apart.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../models/causal_lm.hpp"
#include "../models/llama_config.hpp"
#include "trainer_options.hpp"

namespace latent::train {

// latent-train's Llama presets ("tiny": a test-sized model; "small": the size of DeepSeek-V3's
// "small", 256 wide and 4 layers deep). DeepSeek-V3's are DeepSeekV3Config::preset.
models::LlamaConfig llama_preset(const std::string& name);

// A fresh model, initialised from options.seed: the preset of options.model_type (with vocab_size
// ids), or options.config_file (whose vocabulary check_model_for_data checks).
// Refuses a model whose f32 weights, gradients and AdamW moments cannot fit in this machine's memory,
// before allocating it, and the DeepSeek-V3 loss weights given for a model without those terms.
std::shared_ptr<models::CausalLM> build_model(const TrainerOptions& options, int64_t vocab_size = 256);
// The model of directory `dir` (options.resume_dir, or options.init_from): its own config, which
// --aux-alpha may not change. Refused before loading when it cannot fit in memory for training.
std::shared_ptr<models::CausalLM> load_model(const TrainerOptions& options, const std::string& dir);

// Refuses what this model cannot train on: windows longer than its positions, too short for its
// multi-token prediction, a vocabulary smaller than the data's (256 for bytes, or the tokenizer's).
void check_model_for_data(const models::CausalLM& model, const TrainerOptions& options, int64_t vocab_size);

struct ModelDescription {
  std::string family;               // "DeepSeek-V3", "Llama"
  std::vector<std::string> lines;   // config, parameters, shapes (without indentation)
  std::string loss_settings;        // ", aux_alpha 0.0001, mtp_lambda 0.3, bias_gamma 0.001", or empty
  nlohmann::json hyperparameters;   // what the checkpoint records of the model's loss settings
};
ModelDescription describe_model(const models::CausalLM& model, const TrainerOptions& options);

// "runs/dsv3-small", "runs/llama-small", "runs/<config file stem>" ...: where a new run saves by default.
std::string default_out_base(const TrainerOptions& options);

}  // namespace latent::train

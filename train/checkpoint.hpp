// Training checkpoints: a Hugging Face model directory (config.json, model.safetensors) plus
// optimizer.safetensors, trainer_state.json, metrics.csv, loss.svg and a run's tokenizer.json, saved so that a crash at any
// instant (SIGKILL, power loss) leaves the previous or the new checkpoint, never a mix.
//
// The save protocol, for a checkpoint directory DIR with staging directory S = DIR/.staging:
//   0. create DIR if needed (fsync its parent); recover DIR (below) from any earlier crash;
//   1. create S, fsync DIR;
//   2. write every file into S, each with write_file_atomic (S/F.tmp.<pid>, fsync, rename to S/F,
//      fsync S);
//   3. COMMIT: write S/COMMITTED the same way. The rename of its temporary onto S/COMMITTED is the
//      single instant at which the new checkpoint replaces the old; the fsync of S makes it durable;
//   4. roll forward: rename each S/F over DIR/F, then fsync DIR;
//   5. remove S: its leftovers, then S/COMMITTED, then S itself; fsync DIR.
// Steps 1-3 never touch DIR's own files, and a rename moves a file atomically, so every staged file
// is at every instant either complete in S or complete in DIR; every file is fsync'ed before its
// rename and every rename is made durable (fsync of its directory) before the next step relies on
// it, so a power loss replays the same order. Recovery therefore needs one bit:
//   - no S:                 DIR holds the last completed save (or was never saved to);
//   - S without COMMITTED:  a crash before the commit (DIR holds the previous checkpoint untouched)
//                           or at the very end of step 5 (DIR holds the new one, S is empty);
//                           either way S holds nothing of value (partial files, temporaries) and
//                           is deleted;
//   - S with COMMITTED:     a crash after the commit; the files still in S are the rest of the new
//                           checkpoint, so steps 4 and 5 are finished (moving what is left, removing S).
// Recovery repeats those steps with the same code, so a crash during recovery leaves one of the
// same states and the next recovery finishes the job. Every function below that reads a checkpoint
// recovers first (is_checkpoint, load_trainer_state), and so does every save; latent-train's
// --resume and --out checks go through them. Readers that do not recover (from_pretrained,
// latent-generate) still always see a complete config.json and model.safetensors: each is replaced
// by one rename.
//
// Tests crash a save at each of these instants through the hooks of fault_injection.hpp.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "../optim/optimizer.hpp"
#include "../models/causal_lm.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "training_log.hpp"

namespace latent::train {

struct TrainerState {
  int64_t step = 0;             // optimizer steps taken
  uint64_t sampler_seed = 0, sampler_offset = 0;  // the batch sampler's generator
  int64_t tokens_seen = 0;
  double elapsed_seconds = 0;
  nlohmann::json hyperparameters = nlohmann::json::object();  // what the run was started with
};

// Saves by the protocol above. On an error before the commit (disk full, unwritable directory) the
// staging directory is removed and DIR keeps the previous checkpoint; the error propagates as
// latent::Error naming the directory.
// With a tokenizer, the checkpoint holds it as tokenizer.json (what latent-generate reads).
void save_checkpoint(const std::string& dir, const models::CausalLM& model, const optim::Optimizer& optimizer,
                     const TrainerState& state, const TrainingLog& log,
                     const tokenizer::Tokenizer* tokenizer = nullptr);

// True when dir holds a complete checkpoint (after recovering an interrupted save).
bool is_checkpoint(const std::string& dir);
// Completes a committed but unfinished save, or discards an uncommitted one.
void recover_checkpoint(const std::string& dir);
TrainerState load_trainer_state(const std::string& dir);  // recovers first

// The tokenizer a model or checkpoint directory's token ids belong to: its tokenizer.json, unless
// its trainer_state.json says the run trained on bytes (a tokenizer.json left by an earlier run
// that --overwrite replaced is not the model's). None: the ids are bytes.
std::optional<tokenizer::Tokenizer> load_tokenizer(const std::string& dir);

}  // namespace latent::train

// The Trainer: one training run of any model of the zoo (through models::CausalLM) on text (bytes or a tokenizer's ids),
// from set-up to the last checkpoint: it checks the options, builds or resumes the model, its
// optimizer and data, then steps, evaluates, logs (metrics.csv, loss.svg, progress on stderr),
// samples and saves atomic checkpoints that resume bitwise. Data-parallel over the ranks of the
// process group (each trains on batch / N sequences; rank 0 prints and writes).
//
//   train::TrainerOptions options;            // what latent-train's flags set
//   options.model_type = "llama", options.preset = "tiny", options.data = {"corpus.txt"};
//   train::Trainer trainer(options);          // refuses bad options, files and data with latent::Error
//   trainer.print_summary();
//   return trainer.run();                     // 0 when done; 130 when interrupted (saved, resumable)
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/matmul_precision.hpp"
#include "../distributed/distributed.hpp"
#include "../models/causal_lm.hpp"
#include "../optim/adam.hpp"
#include "../optim/lr_schedule.hpp"
#include "checkpoint.hpp"
#include "data_parallel.hpp"
#include "progress.hpp"
#include "text_data.hpp"
#include "trainer_options.hpp"
#include "training_log.hpp"

namespace latent::train {

// An error every rank raises together (the same check on the same values, or one rank's failure
// shared by a collective): all ranks can exit normally.
struct CollectiveError : Error {
  using Error::Error;
};
// An error raised on this rank alone while the ranks train together: the others would wait for it
// forever in their next collective, so a multi-process job must be aborted.
struct RankError : Error {
  using Error::Error;
};

// Prints e on stderr as one line, "<program>: error: ...", from rank 0 alone when every rank has it;
// aborts the whole job for a RankError of a multi-process run. Returns the exit code: 1.
int report_training_error(const std::exception& e, const std::string& program);

class Trainer {
 public:
  // Checks everything the user can get wrong before any training, identically on every rank: the
  // options (a resume adopts the checkpoint's hyperparameters first), the output directory, the
  // model, the data. Throws latent::Error (a CollectiveError where one rank's failure is shared).
  explicit Trainer(TrainerOptions options, const distributed::ProcessGroup& group = distributed::ProcessGroup::world());

  // Rank 0: the model, data, processes, threads, schedule and output, and notes on a resumed run.
  void print_summary() const;

  // Steps to options().steps, logging, evaluating, sampling and saving at their cadences, and saves
  // at the end. Returns 0; or 130 after saving when interrupt_requested() (interrupt.hpp) on any rank.
  // A non-finite step stops the run (a CollectiveError; the last checkpoint stays) or is skipped.
  int run();

  struct StepResult {
    double lr = 0, grad_norm = 0;
    GlobalLosses losses;        // of the global batch
    std::string nonfinite;      // "ce = nan, total = nan", or empty when the step was finite
    bool skipped() const { return !nonfinite.empty(); }
  };
  // One optimizer step on the next global batch; collective. A non-finite step changes no weight.
  StepResult step();
  struct Evaluation {
    double loss;           // mean next-token cross-entropy, nats per token
    double bits_per_byte;  // the same in bits per byte of the text the targets decode to: comparable across tokenizers
  };
  // Over options().eval_batches validation batches. Not collective: rank 0 alone evaluates while the
  // others go on.
  Evaluation evaluate();
  // Rank 0: a sample generated from a validation prompt, printed on stdout.
  void print_sample();
  // Saves the checkpoint in options().out_dir; collective (rank 0 writes).
  void save();

  const TrainerOptions& options() const { return o_; }
  MatmulPrecision precision() const { return precision_; }  // chosen from options().precision
  const TrainerState& state() const { return state_; }
  const TrainingLog& log() const { return *log_; }
  models::CausalLM& model() { return *model_; }
  const std::vector<std::string>& notes() const { return notes_; }
  const std::optional<tokenizer::Tokenizer>& tokenizer() const { return tokenizer_; }  // none: byte ids

 private:
  void log_step(const StepResult& step, bool evaluate_now);  // a metrics row and the progress line
  CollectiveError nonfinite_stop(const std::string& why, const std::string& hint) const;
  std::string text_of(const std::vector<int64_t>& ids) const;  // the bytes token ids stand for

  TrainerOptions o_;
  const distributed::ProcessGroup& group_;
  MatmulPrecision precision_ = MatmulPrecision::kHighest;  // of step(), evaluate() and print_sample()
  std::string precision_reason_;                            // why, for the summary
  TrainerState state_;
  std::vector<std::string> notes_;
  std::shared_ptr<models::CausalLM> model_;
  std::optional<TextCorpus> corpus_;
  std::optional<tokenizer::Tokenizer> tokenizer_;
  std::optional<BatchSampler> sampler_, val_sampler_;
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<optim::WarmupCosineLR> schedule_;
  std::unique_ptr<DataParallel> parallel_;
  std::unique_ptr<TrainingLog> log_;
  Progress progress_;
  std::set<int64_t> injected_nonfinite_;  // fault_injection.hpp

  int64_t last_saved_step_ = -1;  // -1: nothing saved by this run or before it
  Evaluation last_val_;           // NaN until the first evaluation
  double window_tokens_ = 0, window_seconds_ = 0;
  int64_t skipped_total_ = 0, skipped_in_a_row_ = 0, skipped_in_window_ = 0;
};

}  // namespace latent::train

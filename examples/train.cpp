// latent-train: trains a model of the zoo (DeepSeek-V3 by default, or Llama) on text, as bytes or
// through a BPE tokenizer, with evaluation, samples, atomic checkpoints, exact resume, metrics.csv and
// loss.svg; data-parallel over the ranks of `mpirun -np N` (each trains on --batch / N sequences, rank
// 0 prints and writes).
// The command line maps onto train::TrainerOptions; train::Trainer does the rest.
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <latent/latent.hpp>

#include "train/trainer.hpp"

using namespace latent;

namespace {

constexpr const char* kProgram = "latent-train";

void add_options(CLI::App& app, train::TrainerOptions& o) {
  app.add_option("--model-type", o.model_type, "model family of --preset: deepseek_v3 or llama (a --config file names "
                                               "its own)")->capture_default_str();
  app.add_option("--preset", o.preset, "model preset: tiny or small, for either family (llama small: 256 wide, 4 "
                                       "layers, 8 heads of 32 with 4 key-value heads, MLP 768)")->capture_default_str();
  app.add_option("--config", o.config_file, "model config.json instead of a preset (Hugging Face fields; its "
                                            "model_type, deepseek_v3 or llama, picks the model)");
  app.add_option("--data", o.data, "training text: a file, or a directory of files (repeatable); default: "
                                   "/usr/share/common-licenses");
  app.add_option("--tokenizer", o.tokenizer, "token ids: a Hugging Face tokenizer.json (byte-level BPE), or bpe:N to "
                                           "train one of N ids on the training text first (default: bytes)");
  app.add_option("--steps", o.steps, "total optimizer steps")->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step")->capture_default_str();
  app.add_option("--seq", o.seq, "tokens per sequence")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear warm-up steps")->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "cosine floor of the learning rate")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices only)")->capture_default_str();
  app.add_option("--clip", o.clip, "gradient clipping max norm")->capture_default_str();
  app.add_option("--aux-alpha", o.aux_alpha, "DeepSeek-V3: weight of the sequence-wise balance loss (aux_loss_alpha of "
                                             "the config; a --config file keeps its own unless given)")->capture_default_str();
  app.add_option("--mtp-lambda", o.mtp_lambda, "DeepSeek-V3: weight of the multi-token prediction loss")->capture_default_str();
  app.add_option("--bias-gamma", o.bias_gamma, "DeepSeek-V3: expert-bias update speed (auxiliary-loss-free "
                                               "balancing)")->capture_default_str();
  app.add_option("--threads", o.threads, "worker threads per process (default: LATENT_NUM_THREADS, or the cores "
                                         "divided among the processes mpirun starts on this machine)");
  app.add_option("--seed", o.seed, "seed of initialisation, batch sampling and samples")->capture_default_str();
  app.add_option("--out", o.out_dir, "checkpoint directory (default: runs/dsv3-<preset> or runs/llama-<preset>, or the "
                                     "--resume directory)");
  app.add_flag("--overwrite", o.overwrite, "let a new run replace the checkpoint already in --out");
  app.add_option("--init-from", o.init_from, "start a new run (step 0, fresh optimizer) from this model directory's "
                                            "config.json and weights: latent's or Hugging Face's layout, shards and FP8 "
                                            "block-scaled weights included");
  app.add_option("--resume", o.resume_dir, "continue from this checkpoint; flags not given keep the checkpoint's values");
  app.add_option("--save-every", o.save_every, "checkpoint every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "validation loss every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--sample-every", o.sample_every, "print a generated sample every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--log-every", o.log_every, "progress line every N steps")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--on-nonfinite", o.on_nonfinite, "on a NaN/Inf loss or gradient: 'stop' (exit non-zero, the last "
                                                   "checkpoint kept) or 'skip' the step (no update) and go on")->capture_default_str();
  app.add_option("--max-skips", o.max_skips, "with --on-nonfinite skip: stop after more than N consecutive skipped "
                                             "steps")->capture_default_str();
  app.add_option("--precision", o.precision, "matmul precision: fp32, or bf16 (bf16 GEMM operands, fp32 accumulation; "
                                             "weights, gradients and AdamW stay fp32). Default: bf16 where oneDNN and "
                                             "the CPU's avx512_bf16 allow it, else fp32; on --resume, the checkpoint's");
  app.add_flag("--detect-anomaly", o.detect_anomaly, "find the first op whose result or gradient is NaN/Inf and "
                                                     "stop there, naming it and its module (slow)");
}

// CLI11's own words for a command line it cannot parse, as one line that names the program.
std::string parse_error_message(const CLI::ParseError& e, const CLI::App& app) {
  if (dynamic_cast<const CLI::ExtrasError*>(&e)) {
    std::string words;
    for (const std::string& word : app.remaining()) words += (words.empty() ? "" : " ") + word;
    return fmt::format("unknown option{} {} (see {} --help)", app.remaining().size() > 1 ? "s" : "", words, kProgram);
  }
  return e.what();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"latent-train: train a small DeepSeek-V3 or Llama on text (bytes or a BPE tokenizer)"};
  train::TrainerOptions options;
  add_options(app, options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    fmt::print(stderr, "{}: error: {}\n", kProgram, parse_error_message(e, app));
    return e.get_exit_code();
  }
  for (const CLI::Option* option : app.get_options())
    if (option->count() > 0) options.given.insert(option->get_name());
  try {
    train::Trainer trainer(options);
    trainer.print_summary();
    return trainer.run();
  } catch (const std::exception& e) {
    return train::report_training_error(e, kProgram);
  }
}

// What a training run is told: the model to build or resume, the data, the optimisation and its
// cadences, and what to do when a step goes non-finite. latent-train's flags map one to one onto
// these fields (the field is the flag without dashes, '-' as '_').
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace latent::train {

// The text latent-train reads when no --data is given.
inline constexpr const char* kDefaultCorpus = "/usr/share/common-licenses";

struct TrainerOptions {
  // The model: a preset of a family, a config.json (dispatched on its "model_type"), or the model of
  // the checkpoint being resumed. model_type names the family of a preset: "deepseek_v3" or "llama".
  std::string model_type = "deepseek_v3", preset = "small", config_file, resume_dir;
  // A model directory (latent's, or a published one: shards, FP8 weights) whose config.json and
  // weights start a new run: step 0, a fresh optimizer, its own model settings.
  std::string init_from;
  std::string out_dir;             // empty: runs/<family>-<preset>, or the --resume directory
  bool overwrite = false;          // a new run may replace the checkpoint already in out_dir
  std::vector<std::string> data;   // files or directories; empty: kDefaultCorpus, or the checkpoint's
  // The token ids: empty for the bytes themselves (vocab 256); a tokenizer.json path; or "bpe:N" to
  // train a byte-level BPE of N ids on the training text first. The model's vocabulary follows it,
  // and the checkpoint keeps it as tokenizer.json (a resumed run uses that one).
  std::string tokenizer;

  int64_t steps = 300, batch = 8, seq = 256, warmup = 30;
  double lr = 2e-3, min_lr = 2e-4, weight_decay = 0.1, clip = 1.0;
  // DeepSeek-V3's extra terms: the balance-loss weight (the config's aux_loss_alpha), the multi-token
  // prediction weight and the expert-bias update speed. Other models ignore them.
  double aux_alpha = 1e-4, mtp_lambda = 0.3, bias_gamma = 1e-3;
  uint64_t seed = 1234;   // initialisation, batch sampling and samples
  int threads = 0;        // worker threads per process; 0: LATENT_NUM_THREADS, or the cores shared among local ranks

  int64_t save_every = 200, eval_every = 50, sample_every = 0, log_every = 10, eval_batches = 8, sample_tokens = 240;
  std::string on_nonfinite = "stop";  // or "skip": a NaN/Inf step makes no update and the run goes on
  int64_t max_skips = 10;             // consecutive skipped steps tolerated by "skip"
  bool detect_anomaly = false;        // autograd's anomaly mode: the first op producing NaN/Inf is named
  // The matmul precision of forward and backward: "fp32", or "bf16" (bf16 GEMM operands, float32
  // accumulation; weights, gradients and AdamW stay float32). Empty: bf16 where it can run (a build
  // with oneDNN on a CPU with avx512_bf16), else fp32; on resume, the checkpoint's.
  std::string precision;

  // The flags given on the command line ("--batch", ...). On resume, a flag not given takes the
  // checkpoint's value, so `latent-train --resume DIR` continues that run.
  std::set<std::string> given;
};

}  // namespace latent::train

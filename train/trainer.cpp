// The Trainer's set-up checks, step, evaluation, logging, sampling and saving.
#include "trainer.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "../autograd/anomaly.hpp"
#include "../autograd/elementwise.hpp"
#include "../autograd/grad_mode.hpp"
#include "../core/factory.hpp"
#include "../core/parallel.hpp"
#include "../io/json.hpp"
#include "../optim/clip_grad.hpp"
#include "../tokenizer/bpe_trainer.hpp"
#include "fault_injection.hpp"
#include "interrupt.hpp"
#include "model_setup.hpp"
#include "routing_health.hpp"

namespace latent::train {

namespace fs = std::filesystem;

namespace {

// On --resume, a flag the user did not pass takes the value the run was started with, so
// `latent-train --resume DIR` continues that run; a flag passed with another value wins, with a note.
std::vector<std::string> adopt_checkpoint_hyperparameters(TrainerOptions& o, const nlohmann::json& saved, int world_size) {
  std::vector<std::string> notes;
  const std::string context = "trainer_state.json hyperparameters";
  auto adopt = [&](const char* flag, const char* key, auto& value) {
    using T = std::decay_t<decltype(value)>;
    if (!saved.contains(key)) return;
    const T before = io::json_as<T>(saved.at(key), std::string("key '") + key + "'", context);
    if (!o.given.count(flag)) value = before;
    else if (value != before) notes.push_back(fmt::format("{} {} differs from the checkpoint's {}", flag, value, before));
  };
  const int64_t steps_before = io::optional<int64_t>(saved, "steps", o.steps, context);
  adopt("--batch", "batch", o.batch), adopt("--seq", "seq", o.seq), adopt("--seed", "seed", o.seed);
  adopt("--lr", "lr", o.lr), adopt("--min-lr", "min_lr", o.min_lr), adopt("--warmup", "warmup", o.warmup);
  adopt("--weight-decay", "weight_decay", o.weight_decay), adopt("--clip", "clip", o.clip);
  adopt("--mtp-lambda", "mtp_lambda", o.mtp_lambda), adopt("--bias-gamma", "bias_gamma", o.bias_gamma);
  if (!o.given.count("--steps")) o.steps = steps_before;
  const bool flat_schedule = o.min_lr == o.lr && o.warmup <= std::min(o.steps, steps_before);
  if (o.steps != steps_before && !flat_schedule)
    notes.push_back(fmt::format("--steps {} differs from the checkpoint's {}: the learning-rate schedule changes", o.steps,
                                steps_before));
  // The run's tokenizer is the checkpoint's tokenizer.json (make_tokenizer); its origin is kept for the record.
  if (saved.contains("tokenizer")) {
    const auto tokenizer = io::json_as<std::string>(saved.at("tokenizer"), "key 'tokenizer'", context);
    o.tokenizer = tokenizer == "bytes" ? "" : tokenizer;
  }
  // A checkpoint from before --precision existed trained in float32.
  const std::string precision_before = io::optional<std::string>(saved, "precision", "fp32", context);
  if (!o.given.count("--precision")) o.precision = precision_before;
  else if (o.precision != precision_before)
    notes.push_back(fmt::format("--precision {} differs from the checkpoint's {}", o.precision, precision_before));
  if (saved.contains("data")) {
    const auto data = io::json_as<std::vector<std::string>>(saved.at("data"), "key 'data'", context);
    if (o.data.empty()) o.data = data;
    else if (o.data != data) notes.push_back("--data differs from the checkpoint's data");
  }
  if (!notes.empty()) notes.back() += " (the resumed run leaves the original trajectory)";
  // Cadences do not change the trajectory: the checkpoint's, unless given again.
  for (auto [flag, key, value] : {std::tuple{"--save-every", "save_every", &o.save_every},
                                  {"--eval-every", "eval_every", &o.eval_every}})
    if (!o.given.count(flag) && saved.contains(key))
      *value = io::json_as<int64_t>(saved.at(key), std::string("key '") + key + "'", context);
  // The sampler's state and the global batch do not depend on the number of ranks, so another world
  // size continues the same run; only the float rounding of the gradient sums differs.
  const int64_t world_before = io::optional<int64_t>(saved, "world_size", 1, context);
  if (world_before != world_size)
    notes.push_back(fmt::format("{} process(es) continue a run of {}: the same global batch of {}, equal up to float rounding",
                                world_size, world_before, o.batch));
  return notes;
}

void check_model_flags(const TrainerOptions& o) {
  if (!o.resume_dir.empty() && (o.given.count("--preset") || o.given.count("--config") || o.given.count("--model-type")))
    fail("--resume continues the checkpoint's own model; it cannot be combined with --preset, --config or --model-type");
  if (o.given.count("--preset") && o.given.count("--config")) fail("pass either --preset or --config, not both");
  if (!o.init_from.empty() && (!o.resume_dir.empty() || o.given.count("--preset") || o.given.count("--config") ||
                               o.given.count("--model-type")))
    fail("--init-from starts from that directory's own model; it cannot be combined with --resume, --preset, --config "
         "or --model-type");
  if (!o.resume_dir.empty() && o.given.count("--tokenizer"))
    fail("--resume continues with the checkpoint's own tokenizer; it cannot be combined with --tokenizer");
}

// The vocabulary size N of --tokenizer bpe:N (0 for any other value).
int64_t bpe_vocab_size(const std::string& spec) {
  if (!spec.starts_with("bpe:")) return 0;
  const char *first = spec.data() + 4, *last = spec.data() + spec.size();
  int64_t n = 0;
  const auto [end, error] = std::from_chars(first, last, n);
  if (error != std::errc() || end != last || n <= 257)
    fail("--tokenizer {}: expected bpe:N with N > 257 (256 bytes, 1 special token and at least one merge)", spec);
  return n;
}

// The run's tokenizer: the checkpoint's on --resume (none for a byte-level run), else --tokenizer's,
// trained on the training text for bpe:N.
std::optional<tokenizer::Tokenizer> make_tokenizer(const TrainerOptions& o, const TextCorpus& corpus) {
  if (!o.resume_dir.empty()) return load_tokenizer(o.resume_dir);
  if (o.tokenizer.empty()) return std::nullopt;
  if (const int64_t n = bpe_vocab_size(o.tokenizer)) {
    tokenizer::BpeTrainerOptions options;
    options.vocab_size = n;
    return tokenizer::train_bpe({corpus.train_text()}, options);
  }
  return tokenizer::Tokenizer::from_file(o.tokenizer);
}

// Everything the options can get wrong that needs no file.
void check_options(const TrainerOptions& o) {
  for (auto [value, name] : {std::pair{o.steps, "--steps"}, {o.batch, "--batch"}, {o.seq, "--seq"},
                             {o.log_every, "--log-every"}, {o.eval_batches, "--eval-batches"}})
    if (value <= 0) fail("{} must be positive, got {}", name, value);
  for (auto [value, name] : {std::pair{o.warmup, "--warmup"}, {o.save_every, "--save-every"}, {o.eval_every, "--eval-every"},
                             {o.sample_every, "--sample-every"}, {o.sample_tokens, "--sample-tokens"}})
    if (value < 0) fail("{} must be >= 0, got {}", name, value);
  if (!(o.lr > 0)) fail("--lr must be positive, got {}", o.lr);
  if (!(o.min_lr >= 0 && o.min_lr <= o.lr)) fail("--min-lr must be in [0, --lr {}], got {}", o.lr, o.min_lr);
  for (auto [value, name] : {std::pair{o.weight_decay, "--weight-decay"}, {o.aux_alpha, "--aux-alpha"},
                             {o.mtp_lambda, "--mtp-lambda"}, {o.bias_gamma, "--bias-gamma"}})
    if (!(value >= 0)) fail("{} must be >= 0, got {}", name, value);
  if (!(o.clip > 0)) fail("--clip must be positive, got {}", o.clip);
  if (o.threads < 0) fail("--threads must be positive (or 0 for the default), got {}", o.threads);
  if (o.on_nonfinite != "stop" && o.on_nonfinite != "skip")
    fail("--on-nonfinite must be 'stop' or 'skip', got '{}'", o.on_nonfinite);
  if (o.max_skips < 0) fail("--max-skips must be >= 0, got {}", o.max_skips);
  bpe_vocab_size(o.tokenizer);  // refuses a malformed bpe:N before any file is read
  if (!o.precision.empty() && o.precision != "fp32" && o.precision != "bf16")
    fail("--precision must be fp32 or bf16, got '{}'", o.precision);
}

// The run's matmul precision, and why (for the summary). bf16 is the default where every rank can run
// it; asked for (or resumed) where it cannot, it is refused on every rank alike, never replaced by fp32.
std::pair<MatmulPrecision, std::string> choose_precision(const TrainerOptions& o, const distributed::ProcessGroup& group) {
  std::string why_not;
  const bool here = bf16_matmul_supported(&why_not);
  const bool everywhere = group.size() == 1 ? here : group.all_reduce_sum({here ? 0.0 : 1.0})[0] == 0;
  if (here && !everywhere) why_not = "another rank of this job cannot run bf16 matmuls";
  if (o.precision.empty()) {
    if (everywhere) return {MatmulPrecision::kBFloat16, "default: oneDNN, CPU has avx512_bf16"};
    return {MatmulPrecision::kHighest, "default; bf16 unavailable: " + why_not};
  }
  const bool from_checkpoint = !o.resume_dir.empty() && !o.given.count("--precision");
  const std::string source = from_checkpoint ? "the checkpoint's" : "--precision " + o.precision;
  if (o.precision == "fp32") return {MatmulPrecision::kHighest, source};
  if (everywhere) return {MatmulPrecision::kBFloat16, source};
  if (from_checkpoint)
    fail("the checkpoint in '{}' was trained with --precision bf16, which cannot run here: {}; pass "
                            "--precision fp32 to continue it in float32",
        o.resume_dir, why_not);
  fail("--precision bf16 cannot run here: {}; use --precision fp32", why_not);
}

void check_world_size(const TrainerOptions& o, const distributed::ProcessGroup& group) {
  if (o.batch % group.size() != 0)
    fail("--batch {} does not split across {} processes; pass a multiple of {} (each process trains "
         "on --batch / {} sequences)", o.batch, group.size(), group.size(), group.size());
}

// Runs fn on rank 0 only (file writes, directory recovery); what it throws is thrown on every rank.
void on_main_rank(const distributed::ProcessGroup& group, const std::function<void()>& fn) {
  std::string error;
  if (group.is_main()) {
    try {
      fn();
    } catch (const std::exception& e) {
      error = e.what()[0] ? e.what() : "unknown error";
    }
  }
  if (group.size() > 1) error = group.broadcast(error, 0);
  if (!error.empty()) throw CollectiveError(error);
}

// True on every rank when any rank has the flag (a signal may reach the ranks at different steps).
bool on_any_rank(const distributed::ProcessGroup& group, bool flag) {
  return group.size() == 1 ? flag : group.all_reduce_sum({flag ? 1.0 : 0.0})[0] > 0;
}

// --out must be new, empty or a checkpoint: never a directory of someone else's files.
// A new run never replaces what the user has: an existing checkpoint in --out is refused unless
// --overwrite says so (the default directory instead moves on to a fresh name, see default_out_dir).
void check_output_directory(const std::string& dir, bool overwrite) {
  if (!fs::exists(dir)) return;
  if (!fs::is_directory(dir)) fail("--out '{}' exists and is not a directory", dir);
  recover_checkpoint(dir);  // a first save that crashed before its commit leaves only .staging
  if (fs::is_empty(dir)) return;
  if (!is_checkpoint(dir))
    fail("--out '{}' holds files but no checkpoint; choose a new or empty directory", dir);
  if (!overwrite)
    fail("--out '{}' holds the checkpoint of a run (step {}); continue it with --resume {}, replace it "
         "with --overwrite, or choose another --out", dir, load_trainer_state(dir).step, dir);
}

// runs/dsv3-<preset> (see default_out_base), or -2, -3, ... when that already holds something:
// running the README's command twice keeps the first run's checkpoint.
std::string default_out_dir(const TrainerOptions& o) {
  if (!o.resume_dir.empty()) return o.resume_dir;
  const std::string base = default_out_base(o);
  std::string dir = base;
  for (int n = 2; fs::exists(dir) && !(fs::is_directory(dir) && fs::is_empty(dir)); ++n) dir = fmt::format("{}-{}", base, n);
  return dir;
}

// The global loss terms that are NaN or Inf, as "ce = nan, total = nan" (empty when all are finite).
std::string nonfinite_terms(const GlobalLosses& losses) {
  std::string out;
  auto check = [&](const std::string& name, double value) {
    if (std::isfinite(value)) return;
    const char* shown = std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";  // fmt would print "-nan"
    out += fmt::format("{}{} = {}", out.empty() ? "" : ", ", name, shown);
  };
  for (const auto& [name, value] : losses.terms) check(name, value);
  check("total", losses.total);
  return out;
}

std::string printable(const std::string& bytes) {
  std::string s;
  for (unsigned char b : bytes) s += (b == '\n' || b == '\t' || (b >= 32 && b < 127)) ? char(b) : '?';
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int report_training_error(const std::exception& e, const std::string& program) {
  const distributed::ProcessGroup* group = nullptr;
  try {
    group = &distributed::ProcessGroup::world();
  } catch (const std::exception&) {  // the process group itself failed: this process reports alone
  }
  if (!group || group->size() == 1) {
    fmt::print(stderr, "{}: error: {}\n", program, e.what());
  } else if (!dynamic_cast<const RankError*>(&e)) {  // every rank has the same error: rank 0 tells it once
    if (group->is_main()) fmt::print(stderr, "{}: error: {}\n", program, e.what());
  } else {  // this rank alone failed; the others would wait for it forever
    fmt::print(stderr, "{}: error on rank {} of {}: {}\n", program, group->rank(), group->size(), e.what());
    std::fflush(stderr);
    group->abort(1);
  }
  return 1;
}

Trainer::Trainer(TrainerOptions options, const distributed::ProcessGroup& group)
    : o_(std::move(options)), group_(group), last_val_{std::nan(""), std::nan("")} {
  check_model_flags(o_);
  if (!o_.resume_dir.empty()) {
    state_ = load_trainer_state(o_.resume_dir);  // refuses a directory that is not a checkpoint
    notes_ = adopt_checkpoint_hyperparameters(o_, state_.hyperparameters, group_.size());
    last_saved_step_ = state_.step;
  }
  check_options(o_);
  std::tie(precision_, precision_reason_) = choose_precision(o_, group_);
  check_world_size(o_, group_);
  if (o_.out_dir.empty()) o_.out_dir = default_out_dir(o_);
  if (o_.data.empty()) {
    if (!fs::is_directory(kDefaultCorpus))
      fail("no training text: {} does not exist; pass --data FILE or DIR (repeatable)", kDefaultCorpus);
    o_.data = {kDefaultCorpus};
  }
  for (std::string& path : o_.data) path = fs::absolute(path).lexically_normal().string();  // resume finds them anywhere

  // Only rank 0 looks at (and may repair) the output directory: it is the one that writes there.
  on_main_rank(group_, [&] {
    if (o_.resume_dir.empty() || !fs::exists(o_.out_dir) || !fs::equivalent(o_.out_dir, o_.resume_dir))
      check_output_directory(o_.out_dir, o_.overwrite);
  });

  corpus_.emplace(o_.data);
  tokenizer_ = make_tokenizer(o_, *corpus_);
  if (tokenizer_) corpus_->tokenize(*tokenizer_);
  const int64_t vocab_size = tokenizer_ ? tokenizer_->vocab_size() : 256;
  model_ = !o_.resume_dir.empty()  ? load_model(o_, o_.resume_dir)
           : !o_.init_from.empty() ? load_model(o_, o_.init_from)
                                   : build_model(o_, vocab_size);
  check_model_for_data(*model_, o_, vocab_size);
  // Ranks on one machine share its cores: by default each takes its part instead of all of them.
  if (o_.threads > 0) set_num_threads(o_.threads);
  else if (group_.local_size() > 1 && !std::getenv("LATENT_NUM_THREADS"))
    set_num_threads(std::max(1, get_num_threads() / group_.local_size()));
  if (o_.detect_anomaly) autograd::set_detect_anomaly(true);

  if (int64_t(corpus_->train().size()) < o_.seq + 1)
    fail("--seq {} needs at least {} tokens of training text; the data gives {} (after holding out {} "
         "for validation)", o_.seq, o_.seq + 1, corpus_->train().size(), corpus_->validation().size());
  // Each rank draws its rows of the same seeded global batch (see BatchSampler).
  sampler_.emplace(corpus_->shared_train(), o_.batch, o_.seq, o_.seed, BatchShard{group_.rank(), group_.size()});
  const int64_t val_seq = std::min<int64_t>(o_.seq, int64_t(corpus_->validation().size()) - 1);
  val_sampler_.emplace(corpus_->shared_validation(), o_.batch, val_seq, 0);
  if (!o_.resume_dir.empty()) {
    sampler_->set_state(state_.sampler_seed, state_.sampler_offset);
    if (state_.step >= o_.steps)
      fail("the checkpoint in '{}' is already at step {} of {}; pass a larger --steps to continue",
           o_.resume_dir, state_.step, o_.steps);
  }

  // Decay matrices only: norms (1-D weights) keep their scale, as in GPT-style recipes.
  std::vector<Tensor> decayed, undecayed;
  for (auto& [name, p] : model_->named_parameters()) (p.dim() >= 2 ? decayed : undecayed).push_back(p);
  optim::AdamWOptions adam{o_.lr, 0.9, 0.95, 1e-8, o_.weight_decay};
  optim::AdamWOptions no_decay = adam;
  no_decay.weight_decay = 0;
  optimizer_ = std::make_unique<optim::AdamW>(std::vector<optim::ParamGroup<optim::AdamWOptions>>{{decayed, adam}, {undecayed, no_decay}});
  if (!o_.resume_dir.empty()) {
    optimizer_->load((fs::path(o_.resume_dir) / "optimizer.safetensors").string());
    optimizer_->options(0).weight_decay = o_.weight_decay;  // the load restored the saved one
  }
  schedule_ = std::make_unique<optim::WarmupCosineLR>(o_.lr, o_.min_lr, std::min(o_.warmup, o_.steps), o_.steps);
  // Starts every rank from rank 0's weights and buffers; the AdamW moments are equal already (zero,
  // or read from the same checkpoint), and every rank then takes the same steps.
  parallel_ = std::make_unique<DataParallel>(model_, group_);

  // The metrics columns name the model's loss terms and MoE layers, which only a loss call reports:
  // one validation sequence, without gradients, tells them (the first training step overwrites what
  // it routed). "loss" is the next-token cross-entropy, the quantity val_loss measures (nats/byte);
  // "total" is what the optimizer minimises; "skipped" counts the steps --on-nonfinite skip stepped
  // over since the previous row.
  std::vector<std::string> columns = {"val_bpb", "total"};
  {
    NoGradGuard no_grad;
    const Tensor probe = val_sampler_->sequential(1).front().narrow(0, 0, 1).contiguous();
    for (const auto& [name, value] : model_->loss_terms(probe, {o_.mtp_lambda}).terms)
      if (name != "ce") columns.push_back(name);
  }
  columns.insert(columns.end(), {"grad_norm", "skipped"});
  for (const std::string& column : routing_columns(model_->routing_statistics())) columns.push_back(column);
  log_ = std::make_unique<TrainingLog>(columns);
  if (!o_.resume_dir.empty()) log_->load_csv((fs::path(o_.resume_dir) / "metrics.csv").string(), state_.step);

  const ModelDescription description = describe_model(*model_, o_);
  state_.hyperparameters = {{"model", !o_.resume_dir.empty()  ? state_.hyperparameters.value("model", o_.resume_dir)
                                     : !o_.init_from.empty() ? o_.init_from
                                     : o_.config_file.empty() ? o_.preset
                                                              : o_.config_file},
                            {"model_type", model_->model_type()}, {"data", o_.data},
                            {"tokenizer", o_.tokenizer.empty() ? "bytes" : o_.tokenizer},
                            {"steps", o_.steps},
                            {"batch", o_.batch}, {"seq", o_.seq}, {"lr", o_.lr}, {"min_lr", o_.min_lr},
                            {"warmup", o_.warmup}, {"weight_decay", o_.weight_decay}, {"clip", o_.clip},
                            {"seed", o_.seed}, {"threads", get_num_threads()}, {"save_every", o_.save_every},
                            {"eval_every", o_.eval_every}, {"world_size", group_.size()},
                            {"precision", matmul_precision_name(precision_)}};
  state_.hyperparameters.update(description.hyperparameters);
  injected_nonfinite_ = injected_nonfinite_steps();
}

void Trainer::print_summary() const {
  if (!group_.is_main()) return;
  const ModelDescription d = describe_model(*model_, o_);
  const std::string name = !o_.resume_dir.empty()  ? fmt::format("{} (resumed at step {})", o_.resume_dir, state_.step)
                           : !o_.init_from.empty() ? fmt::format("initialised from {}", o_.init_from)
                           : o_.config_file.empty() ? o_.preset
                                                    : o_.config_file;
  fmt::print("latent-train: {} {}\n", d.family, name);
  for (const std::string& line : d.lines) fmt::print("  {}\n", line);
  const size_t files = corpus_->files().size();
  const std::string source = files == 1 ? corpus_->files()[0]
                             : o_.data.size() == 1 ? fmt::format("{} files in {}", files, o_.data[0])
                                                   : fmt::format("{} files", files);
  if (tokenizer_)
    fmt::print("  data: {} bytes from {} as {} tokens ({} train / {} validation, {:.2f} bytes per token)\n  tokenizer: "
               "byte-level BPE of {} ids ({}), saved with the checkpoint\n", corpus_->bytes(), source, corpus_->size(),
               corpus_->train().size(), corpus_->validation().size(), double(corpus_->bytes()) / double(corpus_->size()),
               tokenizer_->vocab_size(), o_.resume_dir.empty() ? o_.tokenizer : "the checkpoint's tokenizer.json");
  else
    fmt::print("  data: {} bytes ({} train / {} validation) from {}; tokens are bytes\n", corpus_->size(),
               corpus_->train().size(), corpus_->validation().size(), source);
  if (group_.size() > 1)
    fmt::print("  processes: {} MPI ranks, {} sequences of each batch per rank; gradients averaged in {} bucket(s) of "
               "<= {} MB, expert loads summed over the ranks\n", group_.size(), o_.batch / group_.size(),
               parallel_->reducer().buckets().size(), distributed::kDefaultBucketBytes >> 20);
  fmt::print("  threads: {} TBB worker threads{}, BLAS single-threaded (one pool, no oversubscription)\n",
             get_num_threads(), group_.size() > 1 ? " per rank" : "");
  fmt::print("  precision: {} ({}){}\n", matmul_precision_name(precision_), precision_reason_,
             precision_ == MatmulPrecision::kBFloat16
                 ? ": bf16 GEMM operands, fp32 accumulation; weights, gradients, AdamW and the MoE router in fp32"
                 : "");
  fmt::print("  GEMMs: {}\n", describe_gemm_paths());
  fmt::print("  training: steps {} (from {}), AdamW lr {} -> {} (warm-up {}), wd {}, clip {}{}, seed {}\n", o_.steps,
             state_.step, o_.lr, o_.min_lr, std::min(o_.warmup, o_.steps), o_.weight_decay, o_.clip, d.loss_settings, o_.seed);
  fmt::print("  output: {}, saved {}at the end\n", o_.out_dir,
             o_.save_every ? fmt::format("every {} steps and ", o_.save_every) : "");
  for (const std::string& note : notes_) fmt::print("  note: {}\n", note);
  std::fflush(stdout);
}

// Stopping on a non-finite step saves nothing: the state after a diverged batch is not worth keeping.
CollectiveError Trainer::nonfinite_stop(const std::string& why, const std::string& hint) const {
  const std::string kept = last_saved_step_ < 0 ? fmt::format("no checkpoint was saved yet in '{}'", o_.out_dir)
                                                : fmt::format("the checkpoint of step {} in '{}' is intact", last_saved_step_, o_.out_dir);
  return CollectiveError(fmt::format("{}; stopped without saving, {} ({})", why, kept, hint));
}

Trainer::StepResult Trainer::step() {
  const MatmulPrecisionGuard precision(precision_);  // forward and backward; the update is fp32 anyway
  StepResult r;
  r.lr = schedule_->lr(state_.step);
  optimizer_->set_lr(r.lr);
  const Tensor batch = sampler_->next();
  models::LossTerms losses = model_->loss_terms(batch, {o_.mtp_lambda});
  if (group_.is_main() && injected_nonfinite_.count(state_.step + 1)) {
    const Tensor nan = full({}, std::nan(""), losses.total.dtype());
    for (auto& [name, value] : losses.terms)
      if (name == "ce") value = value + nan;
    losses.total = losses.total + nan;
  }
  // The whole global batch's losses, on every rank: a NaN on one rank's shard stops or skips all of them.
  r.losses = parallel_->average_losses(losses);
  r.nonfinite = nonfinite_terms(r.losses);
  r.grad_norm = std::nan("");
  if (r.nonfinite.empty()) {
    losses.total.backward();
    parallel_->all_reduce_gradients();
    r.grad_norm = optim::clip_grad_norm(optimizer_->params(), o_.clip);  // of the averaged, global gradient
    if (!std::isfinite(r.grad_norm)) r.nonfinite = fmt::format("gradient norm = {}", std::isnan(r.grad_norm) ? "nan" : "inf");
  }
  if (r.skipped()) {
    const std::string what = fmt::format("non-finite loss at step {}: {}", state_.step + 1, r.nonfinite);
    if (o_.on_nonfinite == "stop") throw nonfinite_stop(what, "--on-nonfinite skip steps over such batches");
    optimizer_->zero_grad();
    ++skipped_total_, ++skipped_in_a_row_, ++skipped_in_window_;
    if (skipped_in_a_row_ > o_.max_skips)
      throw nonfinite_stop(fmt::format("{}; {} consecutive steps non-finite, more than --max-skips {}", what,
                                       skipped_in_a_row_, o_.max_skips), "lower --lr, or resume from the checkpoint");
    if (group_.is_main()) {
      progress_.end_line();
      fmt::print(stderr, "{}: step skipped (no update; {} skipped so far, {} in a row)\n", what, skipped_total_,
                 skipped_in_a_row_);
    }
  } else {
    optimizer_->step();
    optimizer_->zero_grad();
    parallel_->after_optimizer_step(o_.bias_gamma);  // global expert loads first
    skipped_in_a_row_ = 0;
    state_.tokens_seen += o_.batch * o_.seq;
  }
  ++state_.step;
  return r;
}

Trainer::Evaluation Trainer::evaluate() {
  NoGradGuard no_grad;
  const MatmulPrecisionGuard precision(precision_);  // the loss the run's own forward computes
  double loss = 0, nats = 0, bytes = 0;
  const std::vector<Tensor> batches = val_sampler_->sequential(o_.eval_batches);
  for (const Tensor& batch : batches) {
    const double ce = model_->loss_terms(batch, {0.0}).term("ce").item();
    const Tensor targets = batch.narrow(1, 1, batch.size(1) - 1).contiguous();
    loss += ce;
    nats += ce * double(targets.numel());
    bytes += tokenizer_ ? double(tokenizer_->decode(targets.to_vector<int64_t>()).size()) : double(targets.numel());
  }
  return {loss / double(batches.size()), nats / (bytes * std::log(2.0))};
}

void Trainer::print_sample() {
  if (!group_.is_main()) return;
  const MatmulPrecisionGuard precision(precision_);
  progress_.end_line();
  const std::vector<int64_t>& text = corpus_->validation();
  const int64_t prompt_length = std::min<int64_t>({tokenizer_ ? 16 : 48, int64_t(text.size()),
                                                   model_->max_position_embeddings() - 1});
  const std::vector<int64_t> prompt(text.begin(), text.begin() + prompt_length);
  models::GenerateOptions g;
  g.max_new_tokens = std::min<int64_t>(o_.sample_tokens, model_->max_position_embeddings() - prompt_length);
  g.temperature = 0.8, g.top_k = 40, g.seed = o_.seed;
  const std::vector<int64_t> out = model_->generate(from_vector(prompt), g).to_vector<int64_t>();
  const std::vector<int64_t> generated(out.begin() + prompt_length, out.end());
  fmt::print("--- sample at step {} (prompt from the validation text, then {} generated tokens) ---\n{}\u2502{}\n---\n",
             state_.step, g.max_new_tokens, printable(text_of(prompt)), printable(text_of(generated)));
  std::fflush(stdout);
}

std::string Trainer::text_of(const std::vector<int64_t>& ids) const {
  if (tokenizer_) return tokenizer_->decode(ids);
  return std::string(ids.begin(), ids.end());  // byte ids: each is one char
}

void Trainer::save() {
  state_.sampler_seed = sampler_->seed();
  state_.sampler_offset = sampler_->offset();
  on_main_rank(group_, [&] {
    save_checkpoint(o_.out_dir, *model_, *optimizer_, state_, *log_, tokenizer_ ? &*tokenizer_ : nullptr);
  });
  last_saved_step_ = state_.step;
}

void Trainer::log_step(const StepResult& r, bool evaluate_now) {
  const RoutingHealth health = routing_health(model_->routing_statistics());  // before evaluate() routes other batches
  if (evaluate_now && group_.is_main()) last_val_ = evaluate();
  const double tokens_per_s = window_tokens_ / std::max(window_seconds_, 1e-9);
  window_tokens_ = window_seconds_ = 0;
  std::map<std::string, double> row = {{"loss", r.losses.term("ce")}, {"lr", r.lr}, {"tokens_per_s", tokens_per_s},
                                       {"total", r.losses.total}, {"grad_norm", r.grad_norm},
                                       {"skipped", double(skipped_in_window_)}};
  for (const auto& [name, value] : r.losses.terms)
    if (name != "ce") row[name] = value;
  skipped_in_window_ = 0;
  if (evaluate_now) row["val_loss"] = last_val_.loss, row["val_bpb"] = last_val_.bits_per_byte;
  row.insert(health.columns.begin(), health.columns.end());
  log_->add(state_.step, row);
  if (!group_.is_main()) return;
  const double eta = double(o_.steps - state_.step) * double(o_.batch * o_.seq) / std::max(tokens_per_s, 1e-9);
  progress_.show(fmt::format("step {:>5}/{} | loss {:.4f} | val {} | lr {:.2e} | {:.0f} tok/s | ETA {}{}{}", state_.step,
                             o_.steps, r.losses.term("ce"),
                             std::isnan(last_val_.loss) ? "  -   " : fmt::format("{:.4f} ({:.3f} bpb)", last_val_.loss, last_val_.bits_per_byte),
                             r.lr, tokens_per_s, format_duration(eta),
                             health.columns.empty() ? "" : fmt::format(" | max/mean load {:.2f}", health.worst_imbalance),
                             skipped_total_ ? fmt::format(" | skipped {}", skipped_total_) : ""),
                 state_.step, o_.steps);
}

int Trainer::run() {
  install_interrupt_handler();
  try {
    const auto start_time = std::chrono::steady_clock::now();
    const double elapsed_before = state_.elapsed_seconds;
    const int64_t first_step = state_.step;
    model_->train();
    while (state_.step < o_.steps) {
      const auto t0 = std::chrono::steady_clock::now();
      const StepResult r = step();
      window_tokens_ += double(o_.batch * o_.seq), window_seconds_ += seconds_since(t0);
      const bool stop = on_any_rank(group_, interrupt_requested());
      const bool last = state_.step == o_.steps;
      const bool evaluate_now = (o_.eval_every > 0 && state_.step % o_.eval_every == 0) || last;
      if (!r.skipped() && (state_.step % o_.log_every == 0 || evaluate_now || state_.step == first_step + 1 || stop))
        log_step(r, evaluate_now);
      state_.elapsed_seconds = elapsed_before + seconds_since(start_time);
      if ((o_.save_every > 0 && state_.step % o_.save_every == 0) || last || stop) save();
      if (stop && !last) {
        progress_.end_line();
        if (group_.is_main())
          fmt::print(stderr, "interrupted: checkpoint at step {} saved in {} (continue: latent-train --resume {})\n",
                     state_.step, o_.out_dir, o_.out_dir);
        return 130;
      }
      if (o_.sample_every > 0 && state_.step % o_.sample_every == 0 && !last) print_sample();
    }
    progress_.end_line();
    if (group_.is_main()) {
      fmt::print("trained to step {} in {}; final validation loss {:.4f} nats/{} (uniform: {:.2f}), {:.3f} bits/byte{}\n",
                 state_.step, format_duration(state_.elapsed_seconds), last_val_.loss, tokenizer_ ? "token" : "byte",
                 std::log(double(model_->vocab_size())), last_val_.bits_per_byte,
                 skipped_total_ ? fmt::format("; {} non-finite step(s) skipped", skipped_total_) : "");
      print_sample();
      fmt::print("checkpoint: {} (continue: latent-train --resume {} --steps N; sample: latent-generate {})\n", o_.out_dir,
                 o_.out_dir, o_.out_dir);
    }
    return 0;
  } catch (const CollectiveError&) {
    progress_.end_line();
    throw;
  } catch (const std::exception& e) {  // raised on this rank, maybe on it alone
    progress_.end_line();
    throw RankError(e.what());
  }
}

}  // namespace latent::train

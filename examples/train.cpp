// latent-train: trains a DeepSeek-V3 (MLA + DeepSeekMoE + multi-token prediction) on bytes of text,
// with evaluation, samples, atomic checkpoints, exact resume, metrics.csv and loss.svg; data-parallel
// over the ranks of `mpirun -np N` (each trains on --batch / N sequences, rank 0 prints and writes).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <latent/latent.hpp>

namespace fs = std::filesystem;
using namespace latent;

namespace {

constexpr const char* kDefaultCorpus = "/usr/share/common-licenses";

struct Options {
  std::string preset = "small", config_file, out_dir, resume_dir;
  std::vector<std::string> data;
  int64_t steps = 300, batch = 8, seq = 256, warmup = 30, save_every = 200, eval_every = 50, sample_every = 0,
          log_every = 10, eval_batches = 8, sample_tokens = 240;
  double lr = 2e-3, min_lr = 2e-4, weight_decay = 0.1, clip = 1.0, aux_alpha = 1e-4, mtp_lambda = 0.3,
         bias_gamma = 1e-3;
  int threads = 0;
  uint64_t seed = 1234;
  std::string on_nonfinite = "stop";  // or "skip"
  bool overwrite = false;
  int64_t max_skips = 10;             // consecutive skipped steps tolerated by --on-nonfinite skip
  bool detect_anomaly = false;
  std::set<std::string> given;  // flags present on the command line
};

// Set by SIGINT/SIGTERM; the loop finishes the step, saves and exits. A second signal kills at once
// (SA_RESETHAND), which is still safe: a save is committed by one marker or not at all.
volatile sig_atomic_t interrupted = 0;
void on_interrupt(int) { interrupted = 1; }

void install_interrupt_handler() {
  struct sigaction action = {};
  action.sa_handler = on_interrupt;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

// The progress display: a redrawn bar when stderr is a terminal, else one plain line per logged step.
struct Progress {
  bool tty = ::isatty(STDERR_FILENO);
  bool line_open = false;  // a bar is drawn without its newline

  void show(const std::string& line, int64_t step, int64_t steps) {
    if (!tty) return fmt::print(stderr, "{}\n", line);
    const int width = 24, filled = int(double(width) * double(step) / double(steps));
    fmt::print(stderr, "\r[{}{}] {}\x1b[K", std::string(size_t(filled), '#'), std::string(size_t(width - filled), '.'), line);
    line_open = true;
  }
  void end_line() {
    if (line_open) fmt::print(stderr, "\n");
    line_open = false;
  }
};
Progress progress;

// On --resume, a flag the user did not pass takes the value the run was started with, so
// `latent-train --resume DIR` continues that run; a flag passed with another value wins, with a note.
std::vector<std::string> adopt_checkpoint_hyperparameters(Options& o, const nlohmann::json& saved, int world_size) {
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

// Everything the command line can get wrong that needs no file.
void check_options(const Options& o) {
  for (auto [value, name] : {std::pair{o.steps, "--steps"}, {o.batch, "--batch"}, {o.seq, "--seq"}})
    if (value <= 0) throw Error(fmt::format("{} must be positive, got {}", name, value));
  for (auto [value, name] : {std::pair{o.warmup, "--warmup"}, {o.save_every, "--save-every"},
                             {o.eval_every, "--eval-every"}, {o.sample_every, "--sample-every"}})
    if (value < 0) throw Error(fmt::format("{} must be >= 0, got {}", name, value));
  if (!(o.lr > 0)) throw Error(fmt::format("--lr must be positive, got {}", o.lr));
  if (!(o.min_lr >= 0 && o.min_lr <= o.lr)) throw Error(fmt::format("--min-lr must be in [0, --lr {}], got {}", o.lr, o.min_lr));
  for (auto [value, name] : {std::pair{o.weight_decay, "--weight-decay"}, {o.aux_alpha, "--aux-alpha"},
                             {o.mtp_lambda, "--mtp-lambda"}, {o.bias_gamma, "--bias-gamma"}})
    if (!(value >= 0)) throw Error(fmt::format("{} must be >= 0, got {}", name, value));
  if (!(o.clip > 0)) throw Error(fmt::format("--clip must be positive, got {}", o.clip));
  if (o.threads < 0) throw Error(fmt::format("--threads must be positive (or 0 for the default), got {}", o.threads));
  if (o.on_nonfinite != "stop" && o.on_nonfinite != "skip")
    throw Error(fmt::format("--on-nonfinite must be 'stop' or 'skip', got '{}'", o.on_nonfinite));
  if (o.max_skips < 0) throw Error(fmt::format("--max-skips must be >= 0, got {}", o.max_skips));
}

void check_world_size(const Options& o, const distributed::ProcessGroup& group) {
  if (o.batch % group.size() != 0)
    throw Error(fmt::format("--batch {} does not split across {} processes; pass a multiple of {} (each process trains "
                            "on --batch / {} sequences)", o.batch, group.size(), group.size(), group.size()));
}

// An error every rank raises together (the same check on the same values, or one rank's failure shared
// by a collective): the ranks can all exit normally. Any other error in a multi-process run ends the job.
struct CollectiveError : Error {
  using Error::Error;
};

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
  error = group.broadcast(error, 0);
  if (!error.empty()) throw CollectiveError(error);
}

// True on every rank when any rank has the flag (a signal may reach the ranks at different steps).
bool on_any_rank(const distributed::ProcessGroup& group, bool flag) {
  return group.size() == 1 ? flag : group.all_reduce_sum({flag ? 1.0 : 0.0})[0] > 0;
}

// The global loss terms that are NaN or Inf, as "ce = nan, total = nan" (empty when all are finite).
std::string nonfinite_terms(const train::DeepSeekV3DataParallel::GlobalLosses& l) {
  std::string out;
  for (auto [name, value] : {std::pair{"ce", l.ce}, {"balance", l.balance}, {"mtp", l.mtp}, {"total", l.total}}) {
    if (std::isfinite(value)) continue;
    const char* shown = std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";  // fmt would print "-nan"
    out += fmt::format("{}{} = {}", out.empty() ? "" : ", ", name, shown);
  }
  return out;
}

// Test-only hook: LATENT_TRAIN_TEST_NONFINITE="3,7" makes rank 0's cross-entropy NaN at steps 3 and 7
// (1-based), as a diverging batch would, so the suite can test --on-nonfinite deterministically.
std::set<int64_t> injected_nonfinite_steps() {
  std::set<int64_t> steps;
  if (const char* list = std::getenv("LATENT_TRAIN_TEST_NONFINITE")) {
    std::stringstream ss(list);
    for (std::string item; std::getline(ss, item, ',');) {
      if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos)
        throw Error(fmt::format("LATENT_TRAIN_TEST_NONFINITE: '{}' is not a list of step numbers", list));
      steps.insert(std::stoll(item));
    }
  }
  return steps;
}

void check_model_flags(const Options& o) {
  if (!o.resume_dir.empty() && (o.given.count("--preset") || o.given.count("--config")))
    throw Error("--resume continues the checkpoint's own model; it cannot be combined with --preset or --config");
  if (o.given.count("--preset") && o.given.count("--config")) throw Error("pass either --preset or --config, not both");
}

// Refuses models whose f32 weights, gradients and two AdamW moments cannot fit in this machine.
void check_memory(const models::DeepSeekV3Config& config, const std::string& name) {
  const double bytes = 16.0 * double(config.num_parameters());
  const double physical = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (physical > 0 && bytes > physical)
    throw Error(fmt::format("{}: {} parameters need about {:.1f} GB for f32 weights, gradients and AdamW moments; "
                            "this machine has {:.1f} GB",
                            name, config.num_parameters(), bytes / 1e9, physical / 1e9));
}

void check_sequence_length(const Options& o, const models::DeepSeekV3Config& config) {
  if (o.seq > config.max_position_embeddings)
    throw Error(fmt::format("--seq {} exceeds max_position_embeddings {} of the model", o.seq, config.max_position_embeddings));
  if (o.seq <= config.num_nextn_predict_layers)
    throw Error(fmt::format("--seq {} leaves no position for {} MTP module(s)", o.seq, config.num_nextn_predict_layers));
  if (config.vocab_size < 256)
    throw Error(fmt::format("byte-level training needs vocab_size >= 256, the model has {}", config.vocab_size));
}

// --out must be new, empty or a checkpoint: never a directory of someone else's files.
// A new run never replaces what the user has: an existing checkpoint in --out is refused unless
// --overwrite says so (the default directory instead moves on to a fresh name, see default_out_dir).
void check_output_directory(const std::string& dir, bool overwrite) {
  if (!fs::exists(dir)) return;
  if (!fs::is_directory(dir)) throw Error(fmt::format("--out '{}' exists and is not a directory", dir));
  train::recover_checkpoint(dir);  // a first save that crashed before its commit leaves only .staging
  if (fs::is_empty(dir)) return;
  if (!train::is_checkpoint(dir))
    throw Error(fmt::format("--out '{}' holds files but no checkpoint; choose a new or empty directory", dir));
  if (!overwrite)
    throw Error(fmt::format("--out '{}' holds the checkpoint of a run (step {}); continue it with --resume {}, replace it "
                            "with --overwrite, or choose another --out", dir, train::load_trainer_state(dir).step, dir));
}

std::string printable(const std::vector<int64_t>& bytes) {
  std::string s;
  for (int64_t b : bytes) s += (b == '\n' || b == '\t' || (b >= 32 && b < 127)) ? char(b) : '?';
  return s;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / double(v.size());
}

// "model.layers.3.mlp" -> "moe3": the prefix of the layer's routing-health columns.
std::string routing_tag(const std::string& moe_name) {
  const std::string layer = moe_name.substr(std::string("model.layers.").size());
  return "moe" + layer.substr(0, layer.find('.'));
}

std::vector<std::string> routing_columns(const models::DeepSeekV3& model) {
  std::vector<std::string> cols;
  for (auto& [name, moe] : model.moe_layers()) {
    const std::string tag = routing_tag(name);
    cols.insert(cols.end(), {tag + "_max_over_mean", tag + "_min_share"});
    if (moe->gate->e_score_correction_bias.defined()) cols.push_back(tag + "_bias_spread");
  }
  return cols;
}

// Per MoE layer, from the last training step's global loads (summed over the ranks, in the order of
// model.moe_layers()): max load / mean load (1 is perfect balance),
// the least-loaded expert's share of all assignments (0: an expert starves), and the spread
// max(b) - min(b) of the correction biases that aux-loss-free balancing has built up.
struct RoutingHealth {
  std::map<std::string, double> columns;
  double worst_imbalance = 0;  // max over layers of max load / mean load
};

RoutingHealth routing_health(const models::DeepSeekV3& model, const std::vector<Tensor>& global_loads) {
  RoutingHealth h;
  const auto layers = model.moe_layers();
  for (size_t l = 0; l < layers.size() && l < global_loads.size(); ++l) {
    const auto& [name, moe] = layers[l];
    const std::vector<int64_t> loads = global_loads[l].to_vector<int64_t>();
    double total = 0, most = 0, least = 1e300;
    for (int64_t c : loads) total += double(c), most = std::max(most, double(c)), least = std::min(least, double(c));
    const double mean = total / double(loads.size());
    const std::string tag = routing_tag(name);
    h.columns[tag + "_max_over_mean"] = most / mean;
    h.columns[tag + "_min_share"] = least / total;
    const Tensor& bias = moe->gate->e_score_correction_bias;
    if (bias.defined()) {
      const std::vector<double> b = bias.to(kFloat64).to_vector<double>();
      h.columns[tag + "_bias_spread"] = *std::max_element(b.begin(), b.end()) - *std::min_element(b.begin(), b.end());
    }
    h.worst_imbalance = std::max(h.worst_imbalance, most / mean);
  }
  return h;
}

std::string duration(double seconds) {
  const int s = int(std::max(0.0, seconds));
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

// runs/dsv3-<preset>, or -2, -3, ... when that already holds something: running the README's command
// twice keeps the first run's checkpoint.
std::string default_out_dir(const Options& o) {
  if (!o.resume_dir.empty()) return o.resume_dir;
  const std::string base = "runs/dsv3-" + (o.config_file.empty() ? o.preset : fs::path(o.config_file).stem().string());
  std::string dir = base;
  for (int n = 2; fs::exists(dir) && !(fs::is_directory(dir) && fs::is_empty(dir)); ++n) dir = fmt::format("{}-{}", base, n);
  return dir;
}

// Set once training has started: from then on an error that is not a CollectiveError may have been
// raised by one rank only, and the others would wait for it forever in their next collective.
bool training_started = false;

int run(Options o) {
  distributed::ProcessGroup& group = distributed::ProcessGroup::world();
  const bool main_rank = group.is_main();

  // Everything the user can get wrong is checked before any training starts, identically on every rank.
  train::TrainerState state;
  std::vector<std::string> notes;
  check_model_flags(o);
  if (!o.resume_dir.empty()) {
    state = train::load_trainer_state(o.resume_dir);  // refuses a directory that is not a checkpoint
    notes = adopt_checkpoint_hyperparameters(o, state.hyperparameters, group.size());
  }
  check_options(o);
  check_world_size(o, group);
  if (o.out_dir.empty()) o.out_dir = default_out_dir(o);
  if (o.data.empty()) {
    if (!fs::is_directory(kDefaultCorpus))
      throw Error(fmt::format("no training text: {} does not exist; pass --data FILE or DIR (repeatable)", kDefaultCorpus));
    o.data = {kDefaultCorpus};
  }
  for (std::string& path : o.data) path = fs::absolute(path).lexically_normal().string();  // resume finds them anywhere

  // Only rank 0 looks at (and may repair) the output directory: it is the one that writes there.
  on_main_rank(group, [&] {
    if (o.resume_dir.empty() || !fs::exists(o.out_dir) || !fs::equivalent(o.out_dir, o.resume_dir))
      check_output_directory(o.out_dir, o.overwrite);
  });

  std::shared_ptr<models::DeepSeekV3> model;
  if (!o.resume_dir.empty()) {
    model = models::DeepSeekV3::from_pretrained(o.resume_dir);
    if (o.given.count("--aux-alpha") && o.aux_alpha != model->config().aux_loss_alpha)
      throw Error(fmt::format("--aux-alpha {} differs from aux_loss_alpha {} in the checkpoint's config.json; the model's "
                              "config cannot change on --resume", o.aux_alpha, model->config().aux_loss_alpha));
    check_sequence_length(o, model->config());
  } else {
    models::DeepSeekV3Config config = o.config_file.empty() ? models::DeepSeekV3Config::preset(o.preset)
                                                            : models::DeepSeekV3Config::from_json_file(o.config_file);
    if (o.given.count("--aux-alpha") || o.config_file.empty()) config.aux_loss_alpha = o.aux_alpha;
    check_memory(config, o.config_file.empty() ? "--preset " + o.preset : "--config " + o.config_file);
    check_sequence_length(o, config);
    manual_seed(o.seed);
    model = std::make_shared<models::DeepSeekV3>(config);
  }
  const models::DeepSeekV3Config& config = model->config();
  // Ranks on one machine share its cores: by default each takes its part instead of all of them.
  if (o.threads > 0) set_num_threads(o.threads);
  else if (group.local_size() > 1 && !std::getenv("LATENT_NUM_THREADS"))
    set_num_threads(std::max(1, get_num_threads() / group.local_size()));
  if (o.detect_anomaly) autograd::set_detect_anomaly(true);

  const train::ByteCorpus corpus(o.data);
  if (int64_t(corpus.train().size()) < o.seq + 1)
    throw Error(fmt::format("--seq {} needs at least {} bytes of training text; the data gives {} (after holding out {} "
                            "for validation)", o.seq, o.seq + 1, corpus.train().size(), corpus.validation().size()));
  // Each rank draws its rows of the same seeded global batch (see BatchSampler).
  train::BatchSampler sampler(corpus.train(), o.batch, o.seq, o.seed, {group.rank(), group.size()});
  const int64_t val_seq = std::min<int64_t>(o.seq, int64_t(corpus.validation().size()) - 1);
  const train::BatchSampler val_sampler(corpus.validation(), o.batch, val_seq, 0);
  if (!o.resume_dir.empty()) {
    sampler.set_state(state.sampler_seed, state.sampler_offset);
    if (state.step >= o.steps)
      throw Error(fmt::format("the checkpoint in '{}' is already at step {} of {}; pass a larger --steps to continue",
                              o.resume_dir, state.step, o.steps));
  }

  // Decay matrices only: norms (1-D weights) keep their scale, as in GPT-style recipes.
  std::vector<Tensor> decayed, undecayed;
  for (auto& [name, p] : model->named_parameters()) (p.dim() >= 2 ? decayed : undecayed).push_back(p);
  optim::AdamWOptions adam{o.lr, 0.9, 0.95, 1e-8, o.weight_decay};
  optim::AdamWOptions no_decay = adam;
  no_decay.weight_decay = 0;
  optim::AdamW optimizer({{decayed, adam}, {undecayed, no_decay}});
  if (!o.resume_dir.empty()) {
    optimizer.load((fs::path(o.resume_dir) / "optimizer.safetensors").string());
    optimizer.options(0).weight_decay = o.weight_decay;  // the load restored the saved one
  }
  const optim::WarmupCosineLR schedule(o.lr, o.min_lr, std::min(o.warmup, o.steps), o.steps);
  // Starts every rank from rank 0's weights and gate biases; the AdamW moments are equal already (zero,
  // or read from the same checkpoint), and every rank then takes the same steps.
  train::DeepSeekV3DataParallel parallel(model, group);

  // "loss" is the next-token cross-entropy, the quantity val_loss measures (nats/byte); "total" adds
  // the weighted balance and MTP terms the optimizer actually minimises. "skipped" counts the steps
  // --on-nonfinite skip stepped over since the previous row.
  train::TrainingLog log([&] {
    std::vector<std::string> cols = {"total", "balance", "mtp", "grad_norm", "skipped"};
    auto routing = routing_columns(*model);
    cols.insert(cols.end(), routing.begin(), routing.end());
    return cols;
  }());
  if (!o.resume_dir.empty()) log.load_csv((fs::path(o.resume_dir) / "metrics.csv").string(), state.step);
  state.hyperparameters = {{"model", o.resume_dir.empty() ? (o.config_file.empty() ? o.preset : o.config_file)
                                                          : state.hyperparameters.value("model", o.resume_dir)},
                           {"data", o.data}, {"steps", o.steps}, {"batch", o.batch}, {"seq", o.seq}, {"lr", o.lr},
                           {"min_lr", o.min_lr}, {"warmup", o.warmup}, {"weight_decay", o.weight_decay}, {"clip", o.clip},
                           {"aux_alpha", config.aux_loss_alpha}, {"mtp_lambda", o.mtp_lambda},
                           {"bias_gamma", o.bias_gamma}, {"seed", o.seed}, {"threads", get_num_threads()},
                           {"save_every", o.save_every}, {"eval_every", o.eval_every},
                           {"world_size", group.size()}};

  if (main_rank) {
    const std::string model_name = o.resume_dir.empty() ? (o.config_file.empty() ? o.preset : o.config_file)
                                                        : fmt::format("{} (resumed at step {})", o.resume_dir, state.step);
    fmt::print("latent-train: DeepSeek-V3 {}\n", model_name);
    fmt::print("  config: hidden {}, {} layers ({} dense), {} heads, q_lora {}, kv_lora {}, qk nope/rope {}/{}, v {}\n",
               config.hidden_size, config.num_hidden_layers, config.first_k_dense_replace, config.num_attention_heads,
               config.q_lora_rank, config.kv_lora_rank, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim);
    fmt::print("          {} routed experts (top-{}, {} groups keep {}) + {} shared, width {}; MTP depth {}; {} routing\n",
               config.n_routed_experts, config.num_experts_per_tok, config.n_group, config.topk_group,
               config.n_shared_experts, config.moe_intermediate_size, config.num_nextn_predict_layers, config.topk_method);
    fmt::print("  parameters: {} total, {} activated per token (main model); {} trainable incl. MTP\n",
               config.num_parameters(), config.num_activated_parameters(), model->num_parameters());
    fmt::print("  shapes: ids [{}, {}] -> logits [{}, {}, {}]", o.batch, o.seq + 1, o.batch, o.seq, config.vocab_size);
    for (int64_t k = 1; k <= config.num_nextn_predict_layers; ++k)
      fmt::print(", MTP {} logits [{}, {}, {}]", k, o.batch, o.seq - k, config.vocab_size);
    const size_t files = corpus.files().size();
    fmt::print("\n  data: {} bytes ({} train / {} validation) from {}\n", corpus.size(), corpus.train().size(),
               corpus.validation().size(), files == 1 ? corpus.files()[0]
                                           : o.data.size() == 1 ? fmt::format("{} files in {}", files, o.data[0])
                                                                : fmt::format("{} files", files));
    if (group.size() > 1)
      fmt::print("  processes: {} MPI ranks, {} sequences of each batch per rank; gradients averaged in {} bucket(s) of "
                 "<= {} MB, expert loads summed over the ranks\n", group.size(), o.batch / group.size(),
                 parallel.reducer().buckets().size(), distributed::kDefaultBucketBytes >> 20);
    fmt::print("  threads: {} TBB worker threads{}, BLAS single-threaded (one pool, no oversubscription)\n",
               get_num_threads(), group.size() > 1 ? " per rank" : "");
    fmt::print("  training: steps {} (from {}), AdamW lr {} -> {} (warm-up {}), wd {}, clip {}, aux_alpha {}, mtp_lambda {}, "
               "bias_gamma {}, seed {}\n", o.steps, state.step, o.lr, o.min_lr, std::min(o.warmup, o.steps), o.weight_decay,
               o.clip, config.aux_loss_alpha, o.mtp_lambda, o.bias_gamma, o.seed);
    fmt::print("  output: {}, saved {}at the end\n", o.out_dir, o.save_every ? fmt::format("every {} steps and ", o.save_every) : "");
    for (const std::string& note : notes) fmt::print("  note: {}\n", note);
    std::fflush(stdout);
  }

  // Evaluation and samples run on rank 0 alone (the others go on to the next step and wait for it there).
  auto evaluate = [&] {
    NoGradGuard no_grad;
    std::vector<double> losses;
    for (const Tensor& batch : val_sampler.sequential(o.eval_batches)) losses.push_back(model->loss(batch, 0.0).ce.item());
    return mean_of(losses);
  };
  auto sample = [&] {
    progress.end_line();
    const int64_t prompt_length = std::min<int64_t>({48, int64_t(corpus.validation().size()), config.max_position_embeddings - 1});
    const std::vector<int64_t> prompt(corpus.validation().begin(), corpus.validation().begin() + prompt_length);
    models::DeepSeekV3::GenerateOptions g;
    g.max_new_tokens = std::min<int64_t>(o.sample_tokens, config.max_position_embeddings - prompt_length);
    g.temperature = 0.8, g.top_k = 40, g.seed = o.seed;
    const std::vector<int64_t> out = model->generate(from_vector(prompt), g).to_vector<int64_t>();
    fmt::print("--- sample at step {} (prompt from the validation text, then {} generated bytes) ---\n{}\u2502{}\n---\n",
               state.step, g.max_new_tokens, printable(prompt), printable(std::vector<int64_t>(out.begin() + prompt_length, out.end())));
    std::fflush(stdout);
  };
  int64_t last_saved_step = o.resume_dir.empty() ? -1 : state.step;
  auto save = [&] {
    state.sampler_seed = sampler.seed();
    state.sampler_offset = sampler.offset();
    on_main_rank(group, [&] { train::save_checkpoint(o.out_dir, *model, optimizer, state, log); });
    last_saved_step = state.step;
  };
  // Stopping on a non-finite step saves nothing: the state after a diverged batch is not worth keeping.
  auto nonfinite_stop = [&](const std::string& why, const std::string& hint) {
    const std::string kept = last_saved_step < 0 ? fmt::format("no checkpoint was saved yet in '{}'", o.out_dir)
                                                 : fmt::format("the checkpoint of step {} in '{}' is intact", last_saved_step, o.out_dir);
    return CollectiveError(fmt::format("{}; stopped without saving, {} ({})", why, kept, hint));
  };

  install_interrupt_handler();
  const std::set<int64_t> injected = injected_nonfinite_steps();
  const auto start_time = std::chrono::steady_clock::now();
  const double elapsed_before = state.elapsed_seconds;
  const int64_t first_step = state.step;
  double last_val = std::nan(""), window_tokens = 0, window_seconds = 0;
  int64_t skipped_total = 0, skipped_in_a_row = 0, skipped_in_window = 0;
  std::vector<Tensor> global_loads;
  training_started = true;
  model->train();
  while (state.step < o.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = schedule.lr(state.step);
    optimizer.set_lr(lr);
    const Tensor batch = sampler.next();
    auto losses = model->loss(batch, o.mtp_lambda);
    if (main_rank && injected.count(state.step + 1)) {
      const Tensor nan = full({}, std::nan(""), losses.ce.dtype());
      losses.ce = losses.ce + nan, losses.total = losses.total + nan;
    }
    // The whole global batch's losses, on every rank: a NaN on one rank's shard stops or skips all of them.
    const auto global = parallel.average_losses(losses);
    std::string nonfinite = nonfinite_terms(global);
    double grad_norm = std::nan("");
    if (nonfinite.empty()) {
      losses.total.backward();
      parallel.all_reduce_gradients();
      grad_norm = optim::clip_grad_norm(optimizer.params(), o.clip);  // of the averaged, global gradient
      if (!std::isfinite(grad_norm)) nonfinite = fmt::format("gradient norm = {}", std::isnan(grad_norm) ? "nan" : "inf");
    }
    if (!nonfinite.empty()) {
      const std::string what = fmt::format("non-finite loss at step {}: {}", state.step + 1, nonfinite);
      if (o.on_nonfinite == "stop") throw nonfinite_stop(what, "--on-nonfinite skip steps over such batches");
      optimizer.zero_grad();
      ++skipped_total, ++skipped_in_a_row, ++skipped_in_window;
      if (skipped_in_a_row > o.max_skips)
        throw nonfinite_stop(fmt::format("{}; {} consecutive steps non-finite, more than --max-skips {}", what,
                                         skipped_in_a_row, o.max_skips), "lower --lr, or resume from the checkpoint");
      if (main_rank) {
        progress.end_line();
        fmt::print(stderr, "{}: step skipped (no update; {} skipped so far, {} in a row)\n", what, skipped_total,
                   skipped_in_a_row);
      }
    } else {
      optimizer.step();
      optimizer.zero_grad();
      global_loads = parallel.update_expert_bias(o.bias_gamma);
      skipped_in_a_row = 0;
      state.tokens_seen += o.batch * o.seq;
    }
    const bool skipped = !nonfinite.empty();
    ++state.step;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    window_tokens += double(o.batch * o.seq), window_seconds += seconds;

    const bool stop = on_any_rank(group, interrupted);
    const bool last = state.step == o.steps;
    const bool eval_now = (o.eval_every > 0 && state.step % o.eval_every == 0) || last;
    if (!skipped && (state.step % o.log_every == 0 || eval_now || state.step == first_step + 1 || stop)) {
      const RoutingHealth health = routing_health(*model, global_loads);  // before evaluate() routes validation batches
      if (eval_now && main_rank) last_val = evaluate();
      const double tokens_per_s = window_tokens / std::max(window_seconds, 1e-9);
      window_tokens = window_seconds = 0;
      std::map<std::string, double> row = {{"loss", global.ce}, {"lr", lr}, {"tokens_per_s", tokens_per_s},
                                           {"total", global.total}, {"balance", global.balance},
                                           {"mtp", global.mtp}, {"grad_norm", grad_norm},
                                           {"skipped", double(skipped_in_window)}};
      skipped_in_window = 0;
      if (eval_now) row["val_loss"] = last_val;
      row.insert(health.columns.begin(), health.columns.end());
      log.add(state.step, row);
      const double eta = double(o.steps - state.step) * double(o.batch * o.seq) / std::max(tokens_per_s, 1e-9);
      if (main_rank)
        progress.show(fmt::format("step {:>5}/{} | loss {:.4f} | val {} | lr {:.2e} | {:.0f} tok/s | ETA {} | max/mean load {:.2f}{}",
                                  state.step, o.steps, global.ce,
                                  std::isnan(last_val) ? "  -   " : fmt::format("{:.4f}", last_val), lr, tokens_per_s,
                                  duration(eta), health.worst_imbalance,
                                  skipped_total ? fmt::format(" | skipped {}", skipped_total) : ""),
                      state.step, o.steps);
    }
    state.elapsed_seconds = elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
    if ((o.save_every > 0 && state.step % o.save_every == 0) || last || stop) save();
    if (stop && !last) {
      progress.end_line();
      if (main_rank)
        fmt::print(stderr, "interrupted: checkpoint at step {} saved in {} (continue: latent-train --resume {})\n", state.step,
                   o.out_dir, o.out_dir);
      return 130;
    }
    if (main_rank && o.sample_every > 0 && state.step % o.sample_every == 0 && !last) sample();
  }
  progress.end_line();
  if (main_rank) {
    fmt::print("trained to step {} in {}; final validation loss {:.4f} nats/byte (uniform: {:.2f}){}\n", state.step,
               duration(state.elapsed_seconds), last_val, std::log(256.0),
               skipped_total ? fmt::format("; {} non-finite step(s) skipped", skipped_total) : "");
    sample();
    fmt::print("checkpoint: {} (continue: latent-train --resume {} --steps N; sample: latent-generate {})\n", o.out_dir,
               o.out_dir, o.out_dir);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"latent-train: train a small DeepSeek-V3 on bytes of text"};
  Options o;
  app.add_option("--preset", o.preset, "model preset: tiny, small")->capture_default_str();
  app.add_option("--config", o.config_file, "model config.json (Hugging Face DeepSeek-V3 fields) instead of a preset");
  app.add_option("--data", o.data, "training text: a file, or a directory of files (repeatable); default: "
                                   "/usr/share/common-licenses");
  app.add_option("--steps", o.steps, "total optimizer steps")->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step")->capture_default_str();
  app.add_option("--seq", o.seq, "tokens (bytes) per sequence")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear warm-up steps")->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "cosine floor of the learning rate")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices only)")->capture_default_str();
  app.add_option("--clip", o.clip, "gradient clipping max norm")->capture_default_str();
  app.add_option("--aux-alpha", o.aux_alpha, "weight of the sequence-wise balance loss (aux_loss_alpha of the "
                                             "config; a --config file keeps its own unless given)")->capture_default_str();
  app.add_option("--mtp-lambda", o.mtp_lambda, "weight of the multi-token prediction loss")->capture_default_str();
  app.add_option("--bias-gamma", o.bias_gamma, "expert-bias update speed (auxiliary-loss-free balancing)")->capture_default_str();
  app.add_option("--threads", o.threads, "worker threads per process (default: LATENT_NUM_THREADS, or the cores "
                                         "divided among the processes mpirun starts on this machine)");
  app.add_option("--seed", o.seed, "seed of initialisation, batch sampling and samples")->capture_default_str();
  app.add_option("--out", o.out_dir, "checkpoint directory (default: runs/dsv3-<preset>, or the --resume directory)");
  app.add_flag("--overwrite", o.overwrite, "let a new run replace the checkpoint already in --out");
  app.add_option("--resume", o.resume_dir, "continue from this checkpoint; flags not given keep the checkpoint's values");
  app.add_option("--save-every", o.save_every, "checkpoint every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "validation loss every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--sample-every", o.sample_every, "print a generated sample every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--log-every", o.log_every, "progress line every N steps")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--on-nonfinite", o.on_nonfinite, "on a NaN/Inf loss or gradient: 'stop' (exit non-zero, the last "
                                                   "checkpoint kept) or 'skip' the step (no update) and go on")->capture_default_str();
  app.add_option("--max-skips", o.max_skips, "with --on-nonfinite skip: stop after more than N consecutive skipped "
                                             "steps")->capture_default_str();
  app.add_flag("--detect-anomaly", o.detect_anomaly, "find the first op whose result or gradient is NaN/Inf and "
                                                     "stop there, naming it and its module (slow)");
  CLI11_PARSE(app, argc, argv);
  for (const CLI::Option* option : app.get_options())
    if (option->count() > 0) o.given.insert(option->get_name());
  const distributed::ProcessGroup* group = nullptr;
  try {
    group = &distributed::ProcessGroup::world();
    return run(o);
  } catch (const std::exception& e) {
    progress.end_line();
    const bool collective = !training_started || dynamic_cast<const CollectiveError*>(&e);
    if (!group || group->size() == 1) {
      fmt::print(stderr, "latent-train: error: {}\n", e.what());
    } else if (collective) {  // every rank has the same error: rank 0 tells it once, all exit normally
      if (group->is_main()) fmt::print(stderr, "latent-train: error: {}\n", e.what());
    } else {  // this rank alone failed; the others would wait for it forever
      fmt::print(stderr, "latent-train: error on rank {} of {}: {}\n", group->rank(), group->size(), e.what());
      std::fflush(stderr);
      group->abort(1);
    }
    return 1;
  }
}

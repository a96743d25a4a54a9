// latent-train: trains a DeepSeek-V3 (MLA + DeepSeekMoE + multi-token prediction) on bytes of text,
// with evaluation, samples, atomic checkpoints, exact resume, metrics.csv and loss.svg.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <latent/latent.hpp>

namespace fs = std::filesystem;
using namespace latent;

namespace {

struct Options {
  std::string preset = "small", config_file, out_dir = "runs/dsv3-small", resume_dir;
  std::vector<std::string> data;
  int64_t steps = 600, batch = 8, seq = 256, warmup = 30, save_every = 200, eval_every = 50, sample_every = 0,
          log_every = 10, eval_batches = 8, sample_tokens = 240;
  double lr = 2e-3, min_lr = 2e-4, weight_decay = 0.1, clip = 1.0, aux_alpha = 1e-4, mtp_lambda = 0.3,
         bias_gamma = 1e-3;
  int threads = 0;
  uint64_t seed = 1234;
};

std::vector<std::string> default_corpus() {
  const fs::path dir = "/usr/share/common-licenses";
  std::vector<std::string> files;
  if (fs::is_directory(dir))
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.is_regular_file() && !entry.is_symlink()) files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty())
    throw Error("no training text: /usr/share/common-licenses is missing or empty; pass --data FILE (repeatable)");
  return files;
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

struct RoutingHealth {
  std::map<std::string, double> columns;  // per MoE layer
  double worst_imbalance = 0;             // max over layers of max load / mean load
};

RoutingHealth routing_health(models::DeepSeekV3& model) {
  RoutingHealth h;
  const auto layers = model.moe_layers();
  const auto& routing = model.last_routing();
  for (size_t i = 0; i < routing.size(); ++i) {
    const std::vector<int64_t> loads = routing[i].loads.to_vector<int64_t>();
    double total = 0, most = 0, least = 1e300;
    for (int64_t c : loads) total += double(c), most = std::max(most, double(c)), least = std::min(least, double(c));
    const double mean = total / double(loads.size());
    const std::string layer = routing[i].name.substr(std::string("model.layers.").size(), std::string::npos);
    const std::string tag = "moe" + layer.substr(0, layer.find('.'));
    h.columns[tag + "_max_over_mean"] = most / mean;
    h.columns[tag + "_min_share"] = least / total;
    const Tensor& bias = layers[i].second->gate->e_score_correction_bias;
    if (bias.defined()) {
      const std::vector<double> b = bias.to(kFloat64).to_vector<double>();
      h.columns[tag + "_bias_spread"] = *std::max_element(b.begin(), b.end()) - *std::min_element(b.begin(), b.end());
    }
    h.worst_imbalance = std::max(h.worst_imbalance, most / mean);
  }
  return h;
}

std::vector<std::string> routing_columns(const models::DeepSeekV3& model) {
  std::vector<std::string> cols;
  for (auto& [name, moe] : model.moe_layers()) {
    const std::string layer = name.substr(std::string("model.layers.").size());
    const std::string tag = "moe" + layer.substr(0, layer.find('.'));
    cols.insert(cols.end(), {tag + "_max_over_mean", tag + "_min_share"});
    if (moe->gate->e_score_correction_bias.defined()) cols.push_back(tag + "_bias_spread");
  }
  return cols;
}

std::string duration(double seconds) {
  const int s = int(std::max(0.0, seconds));
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

int run(const Options& o) {
  // Everything the user can get wrong is checked before any training starts.
  for (auto [value, name] : {std::pair{o.steps, "--steps"}, {o.batch, "--batch"}, {o.seq, "--seq"}})
    if (value <= 0) throw Error(fmt::format("{} must be positive, got {}", name, value));
  for (auto [value, name] : {std::pair{o.warmup, "--warmup"}, {o.save_every, "--save-every"}, {o.eval_every, "--eval-every"},
                             {o.sample_every, "--sample-every"}})
    if (value < 0) throw Error(fmt::format("{} must be >= 0, got {}", name, value));
  if (o.lr <= 0 || o.min_lr < 0 || o.min_lr > o.lr) throw Error("--lr must be positive and --min-lr in [0, --lr]");
  if (o.clip <= 0) throw Error("--clip must be positive");
  if (o.threads < 0) throw Error("--threads must be positive");
  if (o.threads > 0) set_num_threads(o.threads);

  std::shared_ptr<models::DeepSeekV3> model;
  models::TrainerState state;
  const std::string out_dir = o.out_dir.empty() ? o.resume_dir : o.out_dir;
  if (!o.resume_dir.empty()) {
    state = models::load_trainer_state(o.resume_dir);  // refuses a directory that is not a checkpoint
    model = models::DeepSeekV3::from_pretrained(o.resume_dir);
  } else {
    models::DeepSeekV3Config config =
        o.config_file.empty() ? models::DeepSeekV3Config::preset(o.preset) : models::DeepSeekV3Config::from_json_file(o.config_file);
    config.aux_loss_alpha = o.aux_alpha;
    if (o.seq > config.max_position_embeddings)
      throw Error(fmt::format("--seq {} exceeds max_position_embeddings {} of the model", o.seq, config.max_position_embeddings));
    manual_seed(o.seed);
    model = std::make_shared<models::DeepSeekV3>(config);
  }
  const models::DeepSeekV3Config& config = model->config();
  if (o.seq > config.max_position_embeddings)
    throw Error(fmt::format("--seq {} exceeds max_position_embeddings {} of the model", o.seq, config.max_position_embeddings));
  if (o.seq <= config.num_nextn_predict_layers)
    throw Error(fmt::format("--seq {} leaves no position for {} MTP modules", o.seq, config.num_nextn_predict_layers));
  if (config.vocab_size < 256) throw Error(fmt::format("byte-level training needs vocab_size >= 256, the model has {}", config.vocab_size));

  const models::ByteCorpus corpus(o.data.empty() ? default_corpus() : o.data);
  models::BatchSampler sampler(corpus.train(), o.batch, o.seq, o.seed);
  const models::BatchSampler val_sampler(corpus.validation(), o.batch, std::min<int64_t>(o.seq, int64_t(corpus.validation().size()) - 1), 0);
  if (!o.resume_dir.empty()) sampler.set_state(state.sampler_seed, state.sampler_offset);
  if (state.step >= o.steps) throw Error(fmt::format("the checkpoint is at step {}; pass --steps larger than that", state.step));

  // Decay matrices only: norms (1-D weights) keep their scale, as in GPT-style recipes.
  std::vector<Tensor> decayed, undecayed;
  for (auto& [name, p] : model->named_parameters()) (p.dim() >= 2 ? decayed : undecayed).push_back(p);
  optim::AdamWOptions adam{o.lr, 0.9, 0.95, 1e-8, o.weight_decay};
  optim::AdamWOptions no_decay = adam;
  no_decay.weight_decay = 0;
  optim::AdamW optimizer({{decayed, adam}, {undecayed, no_decay}});
  if (!o.resume_dir.empty()) optimizer.load((fs::path(o.resume_dir) / "optimizer.safetensors").string());
  const optim::WarmupCosineLR schedule(o.lr, o.min_lr, std::min(o.warmup, o.steps), o.steps);

  models::TrainingLog log([&] {
    std::vector<std::string> cols = {"ce", "balance", "mtp", "grad_norm"};
    auto routing = routing_columns(*model);
    cols.insert(cols.end(), routing.begin(), routing.end());
    return cols;
  }());
  if (!o.resume_dir.empty()) log.load_csv((fs::path(o.resume_dir) / "metrics.csv").string(), state.step);
  state.hyperparameters = {{"preset", o.config_file.empty() ? o.preset : o.config_file}, {"batch", o.batch}, {"seq", o.seq},
                           {"lr", o.lr}, {"min_lr", o.min_lr}, {"warmup", o.warmup}, {"weight_decay", o.weight_decay},
                           {"clip", o.clip}, {"aux_alpha", config.aux_loss_alpha}, {"mtp_lambda", o.mtp_lambda},
                           {"bias_gamma", o.bias_gamma}, {"seed", o.seed}, {"threads", get_num_threads()}};

  fmt::print("latent-train: DeepSeek-V3 '{}'\n", o.config_file.empty() ? (o.resume_dir.empty() ? o.preset : o.resume_dir) : o.config_file);
  fmt::print("  config: hidden {}, {} layers ({} dense), {} heads, q_lora {}, kv_lora {}, qk nope/rope {}/{}, v {}\n",
             config.hidden_size, config.num_hidden_layers, config.first_k_dense_replace, config.num_attention_heads,
             config.q_lora_rank, config.kv_lora_rank, config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim);
  fmt::print("          {} routed experts (top-{}, {} groups keep {}) + {} shared, width {}; MTP depth {}; {} routing\n",
             config.n_routed_experts, config.num_experts_per_tok, config.n_group, config.topk_group,
             config.n_shared_experts, config.moe_intermediate_size, config.num_nextn_predict_layers, config.topk_method);
  fmt::print("  parameters: {} total, {} activated per token (main model); {} trainable incl. MTP\n",
             config.num_parameters(), config.num_activated_parameters(), model->num_parameters());
  fmt::print("  input: ids [{}, {}] -> logits [{}, {}, {}]\n", o.batch, o.seq + 1, o.batch, o.seq, config.vocab_size);
  fmt::print("  data: {} bytes ({} train / {} validation) from {}\n", corpus.size(), corpus.train().size(),
             corpus.validation().size(), o.data.empty() ? "/usr/share/common-licenses" : fmt::format("{} file(s)", o.data.size()));
  fmt::print("  threads: {} TBB worker threads, BLAS single-threaded (one pool, no oversubscription)\n", get_num_threads());
  fmt::print("  training: steps {} (from {}), AdamW lr {} -> {} (warm-up {}), wd {}, clip {}, aux_alpha {}, mtp_lambda {}, "
             "bias_gamma {}\n", o.steps, state.step, o.lr, o.min_lr, o.warmup, o.weight_decay, o.clip, config.aux_loss_alpha,
             o.mtp_lambda, o.bias_gamma);
  fmt::print("  output: {}\n", out_dir);
  std::fflush(stdout);

  auto evaluate = [&] {
    NoGradGuard no_grad;
    std::vector<double> losses;
    for (const Tensor& batch : val_sampler.sequential(o.eval_batches)) losses.push_back(model->loss(batch, 0.0).ce.item());
    return mean_of(losses);
  };
  auto sample = [&] {
    std::vector<int64_t> prompt(corpus.validation().begin(), corpus.validation().begin() + std::min<int64_t>(48, corpus.validation().size()));
    models::DeepSeekV3::GenerateOptions g;
    g.max_new_tokens = std::min<int64_t>(o.sample_tokens, config.max_position_embeddings - int64_t(prompt.size()));
    g.temperature = 0.8, g.top_k = 40, g.seed = o.seed;
    const std::vector<int64_t> out = model->generate(from_vector(prompt), g).to_vector<int64_t>();
    fmt::print("--- sample (prompt from the validation text, then {} generated bytes) ---\n{}\u2502{}\n---\n", g.max_new_tokens,
               printable(prompt), printable(std::vector<int64_t>(out.begin() + int64_t(prompt.size()), out.end())));
    std::fflush(stdout);
  };
  auto save = [&] {
    state.sampler_seed = sampler.seed();
    state.sampler_offset = sampler.offset();
    models::save_checkpoint(out_dir, *model, optimizer, state, log);
  };

  const bool tty = ::isatty(STDERR_FILENO);
  const auto start_time = std::chrono::steady_clock::now();
  const double elapsed_before = state.elapsed_seconds;
  const int64_t first_step = state.step;
  double last_val = std::nan(""), window_tokens = 0, window_seconds = 0;
  model->train();
  while (state.step < o.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = schedule.lr(state.step);
    optimizer.set_lr(lr);
    const Tensor batch = sampler.next();
    const auto losses = model->loss(batch, o.mtp_lambda);
    const double total = losses.total.item();
    if (!std::isfinite(total))
      throw Error(fmt::format("non-finite loss {} at step {}; the last checkpoint in '{}' is intact", total, state.step, out_dir));
    losses.total.backward();
    const double grad_norm = optim::clip_grad_norm(optimizer.params(), o.clip);
    optimizer.step();
    optimizer.zero_grad();
    model->update_expert_bias(o.bias_gamma);
    ++state.step;
    state.tokens_seen += o.batch * o.seq;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    window_tokens += double(o.batch * o.seq), window_seconds += seconds;

    const bool last = state.step == o.steps;
    const bool eval_now = (o.eval_every > 0 && state.step % o.eval_every == 0) || last;
    if (eval_now) last_val = evaluate();
    if (state.step % o.log_every == 0 || eval_now || last || state.step == first_step + 1) {
      const RoutingHealth health = routing_health(*model);
      const double tokens_per_s = window_tokens / std::max(window_seconds, 1e-9);
      window_tokens = window_seconds = 0;
      std::map<std::string, double> row = {{"loss", total}, {"lr", lr}, {"tokens_per_s", tokens_per_s},
                                           {"ce", losses.ce.item()}, {"balance", losses.balance.item()},
                                           {"mtp", losses.mtp.item()}, {"grad_norm", grad_norm}};
      if (eval_now) row["val_loss"] = last_val;
      row.insert(health.columns.begin(), health.columns.end());
      log.add(state.step, row);
      const double eta = double(o.steps - state.step) * double(o.batch * o.seq) / std::max(tokens_per_s, 1e-9);
      const std::string line = fmt::format("step {:>5}/{} | loss {:.4f} | val {:.4f} | lr {:.2e} | {:.0f} tok/s | ETA {} | max/mean load {:.2f}",
                                           state.step, o.steps, total, last_val, lr, tokens_per_s, duration(eta), health.worst_imbalance);
      if (tty) {
        const int width = 24, filled = int(double(width) * double(state.step) / double(o.steps));
        fmt::print(stderr, "\r[{}{}] {}\x1b[K", std::string(filled, '#'), std::string(width - filled, '.'), line);
        if (last) fmt::print(stderr, "\n");
      } else {
        fmt::print(stderr, "{}\n", line);
      }
    }
    state.elapsed_seconds = elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
    if ((o.save_every > 0 && state.step % o.save_every == 0) || last) save();
    if (o.sample_every > 0 && state.step % o.sample_every == 0 && !last) {
      if (tty) fmt::print(stderr, "\n");
      sample();
    }
  }
  fmt::print("trained to step {} in {}; final validation loss {:.4f} nats/byte (uniform: {:.2f})\n", state.step,
             duration(state.elapsed_seconds), last_val, std::log(256.0));
  sample();
  fmt::print("checkpoint: {} (continue: latent-train --resume {} --steps N; sample: latent-generate {})\n", out_dir, out_dir, out_dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"latent-train: train a small DeepSeek-V3 on bytes of text"};
  Options o;
  app.add_option("--preset", o.preset, "model preset: tiny, small")->capture_default_str();
  app.add_option("--config", o.config_file, "model config.json (Hugging Face DeepSeek-V3 fields) instead of a preset");
  app.add_option("--data", o.data, "training text file (repeatable); default: /usr/share/common-licenses/*");
  app.add_option("--steps", o.steps, "total optimizer steps")->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step")->capture_default_str();
  app.add_option("--seq", o.seq, "tokens (bytes) per sequence")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear warm-up steps")->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "cosine floor of the learning rate")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay (matrices only)")->capture_default_str();
  app.add_option("--clip", o.clip, "gradient clipping max norm")->capture_default_str();
  app.add_option("--aux-alpha", o.aux_alpha, "weight of the sequence-wise balance loss")->capture_default_str();
  app.add_option("--mtp-lambda", o.mtp_lambda, "weight of the multi-token prediction loss")->capture_default_str();
  app.add_option("--bias-gamma", o.bias_gamma, "expert-bias update speed (auxiliary-loss-free balancing)")->capture_default_str();
  app.add_option("--threads", o.threads, "worker threads (default: LATENT_NUM_THREADS or all cores)");
  app.add_option("--seed", o.seed, "seed of initialisation and batch sampling")->capture_default_str();
  app.add_option("--out", o.out_dir, "checkpoint directory")->capture_default_str();
  app.add_option("--resume", o.resume_dir, "continue from this checkpoint directory");
  app.add_option("--save-every", o.save_every, "checkpoint every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "validation loss every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--sample-every", o.sample_every, "print a generated sample every N steps (0: only at the end)")->capture_default_str();
  app.add_option("--log-every", o.log_every, "progress line every N steps")->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "\nlatent-train: error: {}\n", e.what());
    return 1;
  }
}

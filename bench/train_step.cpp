// train_step: times one full DeepSeek-V3 training step (the step of train::Trainer, train/trainer.cpp)
// and reports tokens/s, model FLOPs utilisation against a GEMM peak measured on the spot (at the step's
// matmul precision, fp32 or bf16), peak RSS and OS allocations per step; bench/torch_twin.py is its
// PyTorch counterpart. With --paired, fp32 and bf16 steps alternate on one model and the ratio of
// their times is taken pair by pair, so that both see the same moments of a shared machine.
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <latent/latent.hpp>

using namespace latent;

namespace {

constexpr double kAuxLossAlpha = 1e-4, kMtpLambda = 0.3, kBiasGamma = 1e-3;

struct Options {
  std::string preset = "small", precision = "fp32";
  int64_t batch = 8, seq = 256, steps = 10, warmup = 2, routed_experts = 0;
  int threads = 0;
  uint64_t seed = 0;
  bool paired = false;
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// CPU time of the whole process (every thread): unlike wall time, it does not grow while the
// scheduler runs someone else, so on a shared machine it compares variants of a kernel more stably.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Linear-layer weights one token passes through: attention, the dense MLP or the MoE (gate,
// activated routed experts, shared experts) per main layer; eh_proj plus one attention + MoE layer
// per MTP module; the head once per head use (main model and each MTP module).
int64_t linear_weights_per_token(const models::DeepSeekV3Config& c) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads;
  const int64_t q = c.q_lora_rank > 0 ? c.q_lora_rank * (d + H * c.qk_head_dim()) : d * H * c.qk_head_dim();
  const int64_t attention = q + d * (c.kv_lora_rank + c.qk_rope_head_dim) +
                            c.kv_lora_rank * H * (c.qk_nope_head_dim + c.v_head_dim) + H * c.v_head_dim * d;
  const int64_t dense = 3 * d * c.intermediate_size;
  const int64_t moe =
      d * c.n_routed_experts + 3 * d * c.moe_intermediate_size * (c.num_experts_per_tok + c.n_shared_experts);
  const int64_t head = d * c.vocab_size;
  int64_t total = head;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) total += attention + (c.is_moe_layer(l) ? moe : dense);
  return total + c.num_nextn_predict_layers * (2 * d * d + attention + moe + head);
}

// PaLM's model FLOPs (causal mask ignored): 6 per linear weight (2 forward, 4 backward) plus, per
// layer (MTP included), 6 * T * heads * (qk + v head dims) for the scores and the weighted values.
double model_flops_per_token(const models::DeepSeekV3Config& c, int64_t seq) {
  const int64_t layers = c.num_hidden_layers + c.num_nextn_predict_layers;
  const int64_t attention = 6 * layers * seq * c.num_attention_heads * (c.qk_head_dim() + c.v_head_dim);
  return 6.0 * static_cast<double>(linear_weights_per_token(c)) + static_cast<double>(attention);
}

// Best rate of one [2048, 256] x [256, 768] f32 product through latent::matmul (the GEMM path every
// linear layer takes), under the current thread count and at `precision`; the same shape
// torch_twin.py measures.
double gemm_peak_flops(MatmulPrecision precision, int repeats = 20) {
  NoGradGuard no_grad;
  MatmulPrecisionGuard at(precision);
  const Tensor a = randn({2048, 256}), b = randn({256, 768});
  for (int i = 0; i < 3; ++i) matmul(a, b);
  double best = 1e300;
  for (int i = 0; i < repeats; ++i) {
    const auto start = Clock::now();
    const Tensor c = matmul(a, b);
    best = std::min(best, seconds_since(start));
  }
  return 2.0 * 2048 * 256 * 768 / best;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
}

int run(const Options& o) {
  for (auto [value, name] : {std::pair{o.batch, "--batch"}, {o.seq, "--seq"}, {o.steps, "--steps"}})
    if (value <= 0) fail("{} must be positive, got {}", name, value);
  if (o.warmup < 0) fail("--warmup must be >= 0, got {}", o.warmup);
  if (o.threads < 0) fail("--threads must be positive, got {}", o.threads);
  if (o.threads > 0) set_num_threads(o.threads);
  // The precisions whose steps are timed: one, or with --paired fp32 and bf16 in alternation.
  std::vector<MatmulPrecision> precisions{parse_matmul_precision(o.precision)};
  if (o.paired) precisions = {MatmulPrecision::kHighest, MatmulPrecision::kBFloat16};
  for (MatmulPrecision p : precisions) set_matmul_precision(p);  // refuses bf16 where it cannot run

  models::DeepSeekV3Config config = models::DeepSeekV3Config::preset(o.preset);
  config.aux_loss_alpha = kAuxLossAlpha;
  if (o.routed_experts > 0) config.n_routed_experts = o.routed_experts;  // validated by the model
  if (o.seq > config.max_position_embeddings)
    fail("--seq {} exceeds max_position_embeddings {}", o.seq, config.max_position_embeddings);
  manual_seed(o.seed);
  models::DeepSeekV3 model(config);
  model.train();
  const double flops_per_token = model_flops_per_token(config, o.seq);
  int64_t trained = 0;
  for (const Tensor& p : model.parameters()) trained += p.numel();
  fmt::print("threads: {} (one TBB pool, BLAS single-threaded)\n", get_num_threads());
  const std::string timed = o.paired ? "fp32 and bf16, alternating (--paired)" : matmul_precision_name(precisions[0]);
  fmt::print("precision: {}; {}\n", timed, describe_gemm_paths());
  fmt::print("model: preset {}, {} routed experts (top-{}), {} parameters in the main model, {} trained "
             "(MTP included)\n",
             o.preset, config.n_routed_experts, config.num_experts_per_tok, config.num_parameters(), trained);
  fmt::print("model_flops_per_token: {:.0f} ({:.1f} MFLOP at T={})\n", flops_per_token, flops_per_token / 1e6, o.seq);

  // One group, as torch_twin.py: the same AdamW options for every tensor.
  optim::AdamW optimizer(model.parameters(), {3e-4, 0.9, 0.95, 1e-8, 0.1});
  std::mt19937_64 data(o.seed + 1);
  std::uniform_int_distribution<int64_t> byte(0, config.vocab_size - 1);
  std::vector<int64_t> ids(static_cast<size_t>(o.batch * (o.seq + 1)));

  struct Timing {
    double total, forward, backward, update, cpu, loss;
  };
  auto step = [&](MatmulPrecision precision) {
    const MatmulPrecisionGuard at(precision);
    for (int64_t& id : ids) id = byte(data);
    const Tensor batch = from_vector(ids, {o.batch, o.seq + 1});
    const auto start = Clock::now();
    const double cpu_start = process_cpu_seconds();
    const auto losses = model.loss(batch, kMtpLambda);
    const double loss = losses.total.item();
    const double forward = seconds_since(start);
    losses.total.backward();
    const double backward = seconds_since(start) - forward;
    optim::clip_grad_norm(optimizer.params(), 1.0);
    optimizer.step();
    optimizer.zero_grad();
    model.update_expert_bias(kBiasGamma);
    const double total = seconds_since(start);
    return Timing{total, forward, backward, total - forward - backward, process_cpu_seconds() - cpu_start, loss};
  };

  auto name = [](MatmulPrecision p) { return std::string(matmul_precision_name(p)); };
  for (int64_t i = 0; i < o.warmup; ++i)
    for (MatmulPrecision p : precisions) {
      const Timing t = step(p);
      fmt::print("warmup {}/{}{}: {:.3f} s, loss {:.6f}\n", i + 1, o.warmup, o.paired ? " " + name(p) : "", t.total,
                 t.loss);
    }
  const int64_t os_before = allocator::stats().os_allocations;
  struct Series {
    std::vector<double> total, forward, backward, update, cpu;
  };
  std::vector<Series> series(precisions.size());
  for (int64_t i = 0; i < o.steps; ++i)
    for (size_t j = 0; j < precisions.size(); ++j) {
      const size_t k = i % 2 ? precisions.size() - 1 - j : j;  // pairs alternate which precision runs first
      const Timing t = step(precisions[k]);
      Series& s = series[k];
      s.total.push_back(t.total), s.forward.push_back(t.forward), s.backward.push_back(t.backward);
      s.update.push_back(t.update), s.cpu.push_back(t.cpu);
      fmt::print("step {}/{}{}: {:.3f} s (forward+loss {:.3f}, backward {:.3f}, clip+AdamW+bias {:.3f}), loss {:.6f}\n",
                 i + 1, o.steps, o.paired ? " " + name(precisions[k]) : "", t.total, t.forward, t.backward, t.update,
                 t.loss);
    }
  const double os_per_step = static_cast<double>(allocator::stats().os_allocations - os_before) /
                             static_cast<double>(o.steps * static_cast<int64_t>(precisions.size()));

  const double fp32_peak = gemm_peak_flops(MatmulPrecision::kHighest);
  fmt::print("sgemm_peak_gflops: {:.2f} (latent::matmul 2048x256x768 f32, best of 20)\n", fp32_peak / 1e9);
  double bf16_peak = 0;
  if (precisions.back() == MatmulPrecision::kBFloat16) {
    bf16_peak = gemm_peak_flops(MatmulPrecision::kBFloat16);
    fmt::print("bf16_gemm_peak_gflops: {:.2f} (the same product at bf16 precision, best of 20)\n", bf16_peak / 1e9);
  }
  for (size_t k = 0; k < precisions.size(); ++k) {
    const Series& s = series[k];
    // Paired, each line names its precision: "tokens_per_s: fp32 4700.0".
    const std::string label = o.paired ? name(precisions[k]) + " " : "";
    const double step_time = median(s.total), tokens_per_s = static_cast<double>(o.batch * o.seq) / step_time;
    const double peak = precisions[k] == MatmulPrecision::kBFloat16 ? bf16_peak : fp32_peak;
    fmt::print("phase_medians_s: {}forward+loss {:.4f}, backward {:.4f}, clip+AdamW+bias {:.4f}\n", label,
               median(s.forward), median(s.backward), median(s.update));
    fmt::print("step_cpu_median_s: {}{:.4f} (CPU time of all threads)\n", label, median(s.cpu));
    fmt::print("step_time_median_s: {}{:.4f}\n", label, step_time);
    fmt::print("tokens_per_s: {}{:.1f}\n", label, tokens_per_s);
    fmt::print("model_flops_utilization: {}{:.4f} (of the {} peak)\n", label, flops_per_token * tokens_per_s / peak,
               name(precisions[k]));
  }
  if (o.paired) {
    std::vector<double> ratios;  // fp32 time / bf16 time, step i of each
    for (int64_t i = 0; i < o.steps; ++i) ratios.push_back(series[0].total[i] / series[1].total[i]);
    const auto [low, high] = std::minmax_element(ratios.begin(), ratios.end());
    fmt::print("bf16_speedup: {:.3f} (median of {} pairs, range {:.3f}-{:.3f}); ratio of the medians {:.3f}\n",
               median(ratios), o.steps, *low, *high, median(series[0].total) / median(series[1].total));
  }
  fmt::print("peak_rss_mb: {:.1f}\n", peak_rss_mb());
  // Of which tensors: their peak, and what the caching allocator holds (in use and cached) at the end.
  const AllocatorStats memory = allocator::stats();
  fmt::print("tensor_memory_mb: peak in use {:.1f}, held {:.1f}\n", static_cast<double>(memory.peak_bytes_in_use) / 1e6,
             static_cast<double>(memory.bytes_in_use + memory.bytes_cached) / 1e6);
  fmt::print("os_allocations_per_step: {:.2f}\n", os_per_step);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"train_step: time a full DeepSeek-V3 training step (forward, loss, backward, clip, AdamW, bias update)"};
  Options o;
  app.add_option("--preset", o.preset, "model preset: tiny, small")->capture_default_str();
  app.add_option("--batch", o.batch, "sequences per step")->capture_default_str();
  app.add_option("--seq", o.seq, "tokens per sequence (the loss reads seq + 1 ids)")->capture_default_str();
  app.add_option("--steps", o.steps, "timed steps")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed steps first")->capture_default_str();
  app.add_option("--threads", o.threads, "worker threads (default: LATENT_NUM_THREADS or all cores)");
  app.add_option("--routed-experts", o.routed_experts, "override n_routed_experts (top-k unchanged; 0: the preset's)");
  CLI::Option* precision = app.add_option("--precision", o.precision,
                                          "matmul precision: fp32, or bf16 (bfloat16 operands, float32 accumulation)")
                               ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of initialisation and token draws")->capture_default_str();
  app.add_flag("--paired", o.paired,
               "alternate fp32 and bf16 steps on one model (each --steps times) and report both and their ratio, "
               "pair by pair")
      ->excludes(precision);
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    fmt::print(stderr, "train_step: error: {}\n", e.what());
    return 1;
  }
}

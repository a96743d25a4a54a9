// latent-generate: loads a checkpoint or model directory (DeepSeek-V3 or Llama, by config.json's
// model_type) and streams generated text after a prompt, decoding through the model's own cache. Text
// goes through the directory's tokenizer.json when the model was trained with one (train::load_tokenizer),
// else token ids are bytes.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <latent/latent.hpp>

using namespace latent;

namespace {

// Refuses a model whose weights cannot fit in this machine before allocating any of them: loading
// holds the file's tensors and the model's float32 parameters at once, 8 bytes per parameter.
void check_memory(const std::string& config_json) {
  const int64_t parameters = models::num_parameters_of_config_file(config_json);
  const double bytes = 8.0 * double(parameters);
  const double physical = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (physical > 0 && bytes > physical)
    fail("{} parameters need about {:.1f} GB to load; this machine has {:.1f} GB", parameters,
         bytes / 1e9, physical / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"latent-generate: continue a prompt with a trained DeepSeek-V3 or Llama"};
  std::string dir, prompt;
  bool read_stdin = false;
  models::GenerateOptions options;
  options.max_new_tokens = 200;
  options.temperature = 0.8;
  options.top_k = 40;
  int threads = 0;
  std::string precision = "fp32";
  bool timings = false;
  app.add_option("model", dir, "checkpoint / model directory (config.json + model.safetensors)")->required();
  app.add_option("--prompt,-p", prompt, "prompt text (default: read standard input)");
  app.add_flag("--stdin", read_stdin, "read the prompt from standard input");
  app.add_option("--max-tokens,-n", options.max_new_tokens, "tokens to generate")->capture_default_str();
  app.add_option("--temperature,-t", options.temperature, "sampling temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-k,-k", options.top_k, "sample among the k most likely tokens (0: all)")->capture_default_str();
  app.add_option("--seed", options.seed, "sampling seed")->capture_default_str();
  app.add_option("--threads", threads, "worker threads");
  app.add_option("--precision", precision, "matmul precision: fp32, or bf16 (bf16 GEMM operands, fp32 accumulation; "
                                           "refused where oneDNN or the CPU's avx512_bf16 is missing)")
      ->capture_default_str();
  app.add_flag("--timings", timings, "print prompt and generation speed to standard error at the end");
  CLI11_PARSE(app, argc, argv);
  try {
    if (options.max_new_tokens < 0) fail("--max-tokens must be >= 0, got {}", options.max_new_tokens);
    if (!(options.temperature >= 0)) fail("--temperature must be >= 0, got {}", options.temperature);
    if (options.top_k < 0) fail("--top-k must be >= 0, got {}", options.top_k);
    if (threads < 0) fail("--threads must be positive, got {}", threads);
    if (precision != "fp32" && precision != "bf16")
      fail("--precision must be fp32 or bf16, got '{}'", precision);
    std::string why_not;
    if (precision == "bf16" && !bf16_matmul_supported(&why_not))
      fail("--precision bf16 cannot run here: {}; use --precision fp32", why_not);
    if (!std::filesystem::is_directory(dir)) fail("'{}' is not a directory", dir);
    if (!std::filesystem::is_regular_file(std::filesystem::path(dir) / "config.json"))
      fail("'{}' is not a model directory: it has no config.json", dir);
    if (threads > 0) set_num_threads(threads);
    if (prompt.empty() || read_stdin) {
      if (!read_stdin && ::isatty(STDIN_FILENO)) fail("no prompt: pass --prompt TEXT or pipe text to standard input");
      prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    }
    if (prompt.empty()) fail("the prompt is empty");
    check_memory((std::filesystem::path(dir) / "config.json").string());
    const std::shared_ptr<models::CausalLM> model = models::from_pretrained(dir);
    model->eval();
    const std::optional<tokenizer::Tokenizer> tokenizer = train::load_tokenizer(dir);
    if (tokenizer && tokenizer->vocab_size() > model->vocab_size())
      fail("'{}': tokenizer.json has {} ids but the model's vocab_size is {}", dir, tokenizer->vocab_size(),
           model->vocab_size());
    std::vector<int64_t> ids;
    if (tokenizer) ids = tokenizer->encode(prompt);
    else for (unsigned char c : prompt) ids.push_back(c);
    if (ids.empty()) fail("the prompt encodes to no tokens");
    const int64_t max_positions = model->max_position_embeddings();
    if (int64_t(ids.size()) >= max_positions)
      fail("prompt of {} tokens leaves no room within max_position_embeddings {}", ids.size(), max_positions);
    const int64_t room = max_positions - int64_t(ids.size());
    if (options.max_new_tokens > room) {
      fmt::print(stderr, "latent-generate: generating {} tokens, all that fits in max_position_embeddings {}\n", room,
                 max_positions);
      options.max_new_tokens = room;
    }
    const MatmulPrecisionGuard at(parse_matmul_precision(precision));
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    // The prompt phase ends with the first new token (prefill and its pick); every later token is
    // one decoding step.
    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    Clock::time_point first, last;
    int64_t emitted = 0;
    model->generate(from_vector(ids), options, [&](int64_t token) {
      // A byte-level BPE token decodes to its own bytes, so tokens stream one by one.
      if (tokenizer) {
        const std::string text = tokenizer->decode(std::vector<int64_t>{token});
        std::fwrite(text.data(), 1, text.size(), stdout);
      } else {
        std::fputc(token < 256 ? int(token) : '?', stdout);  // a vocabulary wider than bytes has no text for the rest
      }
      std::fflush(stdout);
      last = Clock::now();
      if (emitted++ == 0) first = last;
      return true;
    });
    std::fputc('\n', stdout);
    if (timings && emitted > 0) {
      const double prompt_seconds = std::chrono::duration<double>(first - start).count();
      const double generation_seconds = std::chrono::duration<double>(last - first).count();
      fmt::print(stderr, "latent-generate: prompt {} tokens in {:.6f} s ({:.1f} tokens/s), then {} tokens in {:.6f} s ({:.1f} tokens/s)\n",
                 ids.size(), prompt_seconds, double(ids.size()) / prompt_seconds, emitted - 1, generation_seconds,
                 emitted > 1 ? double(emitted - 1) / generation_seconds : 0.0);
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "latent-generate: error: {}\n", e.what());
    return 1;
  }
}

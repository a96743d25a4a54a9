// latent-generate: loads a checkpoint (or any DeepSeek-V3 model directory) and streams generated
// bytes after a prompt, decoding through the absorbed MLA latent cache.
#include <unistd.h>

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
void check_memory(const models::DeepSeekV3Config& config) {
  const double bytes = 8.0 * double(config.num_parameters());
  const double physical = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  if (physical > 0 && bytes > physical)
    throw Error(fmt::format("{} parameters need about {:.1f} GB to load; this machine has {:.1f} GB",
                            config.num_parameters(), bytes / 1e9, physical / 1e9));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"latent-generate: continue a prompt with a trained DeepSeek-V3 (byte-level)"};
  std::string dir, prompt;
  bool read_stdin = false;
  models::DeepSeekV3::GenerateOptions options;
  options.max_new_tokens = 200;
  options.temperature = 0.8;
  options.top_k = 40;
  int threads = 0;
  app.add_option("model", dir, "checkpoint / model directory (config.json + model.safetensors)")->required();
  app.add_option("--prompt,-p", prompt, "prompt text (default: read standard input)");
  app.add_flag("--stdin", read_stdin, "read the prompt from standard input");
  app.add_option("--max-tokens,-n", options.max_new_tokens, "bytes to generate")->capture_default_str();
  app.add_option("--temperature,-t", options.temperature, "sampling temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-k,-k", options.top_k, "sample among the k most likely bytes (0: all)")->capture_default_str();
  app.add_option("--seed", options.seed, "sampling seed")->capture_default_str();
  app.add_option("--threads", threads, "worker threads");
  CLI11_PARSE(app, argc, argv);
  try {
    if (options.max_new_tokens < 0) throw Error(fmt::format("--max-tokens must be >= 0, got {}", options.max_new_tokens));
    if (!(options.temperature >= 0)) throw Error(fmt::format("--temperature must be >= 0, got {}", options.temperature));
    if (options.top_k < 0) throw Error(fmt::format("--top-k must be >= 0, got {}", options.top_k));
    if (threads < 0) throw Error(fmt::format("--threads must be positive, got {}", threads));
    if (!std::filesystem::is_directory(dir)) throw Error(fmt::format("'{}' is not a directory", dir));
    if (!std::filesystem::is_regular_file(std::filesystem::path(dir) / "config.json"))
      throw Error(fmt::format("'{}' is not a model directory: it has no config.json", dir));
    if (threads > 0) set_num_threads(threads);
    if (prompt.empty() || read_stdin) {
      if (!read_stdin && ::isatty(STDIN_FILENO)) throw Error("no prompt: pass --prompt TEXT or pipe text to standard input");
      prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    }
    if (prompt.empty()) throw Error("the prompt is empty");
    check_memory(models::DeepSeekV3Config::from_json_file((std::filesystem::path(dir) / "config.json").string()));
    const auto model = models::DeepSeekV3::from_pretrained(dir);
    model->eval();
    std::vector<int64_t> ids;
    for (unsigned char c : prompt) ids.push_back(c);
    if (int64_t(ids.size()) >= model->config().max_position_embeddings)
      throw Error(fmt::format("prompt of {} bytes leaves no room within max_position_embeddings {}", ids.size(),
                              model->config().max_position_embeddings));
    const int64_t room = model->config().max_position_embeddings - int64_t(ids.size());
    if (options.max_new_tokens > room) {
      fmt::print(stderr, "latent-generate: generating {} bytes, all that fits in max_position_embeddings {}\n", room,
                 model->config().max_position_embeddings);
      options.max_new_tokens = room;
    }
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    model->generate(from_vector(ids), options, [](int64_t token) {
      std::fputc(token < 256 ? int(token) : '?', stdout);  // a vocabulary wider than bytes has no text for the rest
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "latent-generate: error: {}\n", e.what());
    return 1;
  }
}

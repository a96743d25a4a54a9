// latent-train and latent-generate given malformed configs, checkpoints, model directories and
// data paths: each must exit non-zero with exactly one line on stderr saying what is wrong.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "../helpers.hpp"
#include "../programs.hpp"

using namespace latent;
using testing::program;
using testing::quote;
using testing::read_file;
using testing::TempDir;
namespace fs = std::filesystem;

namespace {

void write_all(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Runs the program with stdin from /dev/null and requires the failure a user should see: a non-zero
// exit and one line on stderr, "<program>: error: ..." containing `needle`.
void require_one_line_failure(const std::string& program, const std::vector<std::string>& args,
                              const std::string& needle, const fs::path& scratch) {
  std::string command = quote(program);
  for (const std::string& arg : args) command.append(" ").append(quote(arg));
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on the chained operator+.
  command.append(" </dev/null >").append(quote((scratch / "stdout").string()));
  command.append(" 2>").append(quote((scratch / "stderr").string()));
  INFO(command);
  const int status = std::system(command.c_str());
  const std::string err = read_file((scratch / "stderr").string());
  INFO("stderr: " << err);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(std::count(err.begin(), err.end(), '\n') == 1);
  CHECK(err.back() == '\n');
  CHECK_THAT(err, Catch::StartsWith(fs::path(program).filename().string() + ": error: ") && Catch::Contains(needle));
}

models::DeepSeekV3Config micro_cli_config() {
  models::DeepSeekV3Config c;
  c.vocab_size = 256, c.hidden_size = 4, c.intermediate_size = 8, c.moe_intermediate_size = 2;
  c.num_hidden_layers = 2, c.first_k_dense_replace = 1, c.num_attention_heads = 1, c.q_lora_rank = 2;
  c.kv_lora_rank = 2, c.qk_nope_head_dim = 2, c.qk_rope_head_dim = 2, c.v_head_dim = 2;
  c.n_routed_experts = 4, c.n_shared_experts = 1, c.num_experts_per_tok = 2, c.n_group = 2, c.topk_group = 1;
  c.max_position_embeddings = 16, c.num_nextn_predict_layers = 1, c.routed_scaling_factor = 2.5;
  return c;
}

}  // namespace

TEST_CASE("latent-train refuses malformed configs, checkpoints and data paths in one line", "[cli][hostile]") {
  const std::string train = program("LATENT_TRAIN");
  const TempDir tmp("latent-cli-errors");
  const fs::path config = tmp.path / "config.json", out = tmp.path / "out";
  write_all(tmp.path / "corpus.txt", std::string(4096, 'a'));
  const std::vector<std::string> common = {"--config", config.string(), "--data", (tmp.path / "corpus.txt").string(),
                                           "--out", out.string(), "--steps", "1", "--batch", "1", "--seq", "8"};
  auto config_with = [&](const std::string& key, const nlohmann::json& value) {
    auto j = nlohmann::json::parse(micro_cli_config().to_json_string());
    j[key] = value;
    write_all(config, j.dump());
  };

  write_all(config, "{\"vocab_size\": 256,");
  require_one_line_failure(train, common, config.string() + ": invalid JSON at line 1", tmp.path);
  config_with("kv_lora_rank", 0);
  require_one_line_failure(train, common, "key 'kv_lora_rank' must be positive, got 0", tmp.path);
  config_with("n_routed_experts", 5);
  require_one_line_failure(train, common, "key 'n_routed_experts' (5) must be divisible by n_group (2)", tmp.path);
  config_with("hidden_size", 1'000'000'000'000);
  require_one_line_failure(train, common, "sizes too large", tmp.path);
  config_with("hidden_size", "4");
  require_one_line_failure(train, common, "key 'hidden_size' must be an integer, got string \"4\"", tmp.path);

  micro_cli_config().to_json_file(config.string());
  std::vector<std::string> args = common;
  args[3] = (tmp.path / "no-such-corpus.txt").string();
  require_one_line_failure(train, args, "no-such-corpus.txt", tmp.path);
  args = common;
  args.back() = "17";  // --seq beyond max_position_embeddings 16
  require_one_line_failure(train, args, "--seq 17 exceeds max_position_embeddings 16", tmp.path);

  // A checkpoint directory with every file present but weights that do not load.
  const fs::path checkpoint = tmp.path / "checkpoint";
  models::DeepSeekV3(micro_cli_config()).save_pretrained(checkpoint.string());
  write_all(checkpoint / "optimizer.safetensors", "");
  write_all(checkpoint / "trainer_state.json", R"({"step": 1, "sampler": {"seed": 1, "offset": 0}})");
  const std::string weights = read_file((checkpoint / "model.safetensors").string());
  write_all(checkpoint / "model.safetensors", weights.substr(0, weights.size() / 2));
  require_one_line_failure(train, {"--resume", checkpoint.string(), "--data", (tmp.path / "corpus.txt").string()},
                           (checkpoint / "model.safetensors").string(), tmp.path);
  write_all(checkpoint / "trainer_state.json", R"({"step": -1, "sampler": {"seed": 1, "offset": 0}})");
  require_one_line_failure(train, {"--resume", checkpoint.string()}, "key 'step' must be >= 0", tmp.path);
  require_one_line_failure(train, {"--resume", (tmp.path / "nothing").string()}, "is not a checkpoint", tmp.path);
}

TEST_CASE("latent-generate refuses malformed model directories and prompts in one line", "[cli][hostile]") {
  const std::string generate = program("LATENT_GENERATE");
  const TempDir tmp("latent-cli-errors");
  const fs::path dir = tmp.path / "model";
  models::DeepSeekV3(micro_cli_config()).save_pretrained(dir.string());
  const std::vector<std::string> args = {dir.string(), "--prompt", "hello", "--max-tokens", "2"};

  require_one_line_failure(generate, {(tmp.path / "absent").string(), "-p", "x"}, "is not a directory", tmp.path);
  const std::string good_config = read_file((dir / "config.json").string());
  write_all(dir / "config.json", "[]");
  require_one_line_failure(generate, args, "expected a JSON object", tmp.path);
  auto odd = nlohmann::json::parse(good_config);
  odd["qk_rope_head_dim"] = 3;
  write_all(dir / "config.json", odd.dump());
  require_one_line_failure(generate, args, "key 'qk_rope_head_dim' must be even", tmp.path);
  auto narrow = nlohmann::json::parse(good_config);
  narrow["vocab_size"] = 100;  // the weights were saved for 256
  write_all(dir / "config.json", narrow.dump());
  require_one_line_failure(generate, args, "model.embed_tokens.weight (checkpoint [256, 4], model [100, 4])", tmp.path);
  auto huge = nlohmann::json::parse(good_config);
  huge["intermediate_size"] = 20'000'000'000;  // 2.4e11 parameters: valid, but no machine here holds them
  write_all(dir / "config.json", huge.dump());
  require_one_line_failure(generate, args, "parameters need about", tmp.path);
  write_all(dir / "config.json", good_config);

  require_one_line_failure(generate, {dir.string(), "--prompt", std::string(16, 'a')},
                           "leaves no room within max_position_embeddings 16", tmp.path);
  const std::string weights = read_file((dir / "model.safetensors").string());
  write_all(dir / "model.safetensors", weights.substr(0, 7));
  require_one_line_failure(generate, args, "too short for the 8-byte header length", tmp.path);
  fs::remove(dir / "model.safetensors");
  require_one_line_failure(generate, args, "no model.safetensors or model.safetensors.index.json", tmp.path);
}

TEST_CASE("latent-train names itself when it refuses an unknown option or a malformed value", "[cli]") {
  const std::string train = program("LATENT_TRAIN");
  const TempDir tmp("latent-cli-errors");
  require_one_line_failure(train, {"--steps", "3", "--foo"}, "unknown option --foo (see latent-train --help)", tmp.path);
  require_one_line_failure(train, {"--stpes", "3"}, "unknown options --stpes 3", tmp.path);
  require_one_line_failure(train, {"--steps", "many"}, "--steps", tmp.path);
}

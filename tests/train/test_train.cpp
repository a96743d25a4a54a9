// End-to-end tests of the training job: latent-train and latent-generate run as a user runs them (on
// the tiny preset, small batches and a generated corpus), then their files are read back through the
// library: checkpoints, exact resume, falling loss, refused inputs, non-finite losses, crash recovery, generation.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "../helpers.hpp"
#include "../programs.hpp"
#include "train/interrupt.hpp"
#include "train/model_setup.hpp"
#include "train/trainer.hpp"

extern char** environ;

using namespace latent;
using latent::testing::bf16_available;
namespace fs = std::filesystem;
using latent::testing::program;
using latent::testing::quote;
using latent::testing::read_file;
using latent::testing::TempDir;

namespace {

void write_file(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) lines.push_back(line);
  return lines;
}

struct Run {
  int exit_code;
  std::string out, err;
};

// Runs `binary args...` through the shell with `input` as standard input, and `env` ("NAME=value")
// added to its environment; stderr is a file, so latent-train prints plain lines rather than a
// progress bar.
Run run(const std::string& binary, const std::vector<std::string>& args, const std::string& input = "",
        const std::string& env = "") {
  TempDir io;
  write_file(io / "in", input);
  std::vector<std::string> words = {quote(binary)};
  if (!env.empty()) words.insert(words.begin(), {"env", quote(env)});
  for (const std::string& arg : args) words.push_back(quote(arg));
  for (const char* stream : {"in", "out", "err"}) {
    words.push_back(std::string(stream) == "in" ? "<" : std::string(stream) == "out" ? ">" : "2>");
    words.push_back(quote(io / stream));
  }
  std::string command;
  for (const std::string& word : words) command.append(word).append(1, ' ');
  const int status = std::system(command.c_str());
  REQUIRE(WIFEXITED(status));
  return {WEXITSTATUS(status), read_file(io / "out"), read_file(io / "err")};
}

// A small repetitive corpus: the model can learn it in a few dozen steps.
std::string write_corpus(const TempDir& dir) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog.\n";
  write_file(dir / "corpus.txt", text);
  return dir / "corpus.txt";
}

// `args` with flag/value pairs from `changes` replacing those already there (value "<drop>" removes
// the flag), the others appended.
std::vector<std::string> with_flags(std::vector<std::string> args, const std::vector<std::string>& changes) {
  for (size_t i = 0; i + 1 < changes.size(); i += 2) {
    const auto it = std::find(args.begin(), args.end(), changes[i]);
    if (it != args.end() && changes[i + 1] == "<drop>") args.erase(it, it + 2);
    else if (it != args.end()) *(it + 1) = changes[i + 1];
    else args.insert(args.end(), {changes[i], changes[i + 1]});
  }
  return args;
}

// The flags every run here shares: tiny model, small batches, a flat learning rate after a short
// warm-up (so the schedule does not depend on --steps), two threads.
std::vector<std::string> tiny_args(const std::string& corpus, const std::string& out, int64_t steps,
                                   const std::vector<std::string>& changes = {}) {
  return with_flags({"--preset", "tiny", "--data", corpus, "--out", out, "--steps", std::to_string(steps), "--batch", "2",
                     "--seq", "32", "--warmup", "3", "--lr", "2e-3", "--min-lr", "2e-3", "--threads", "2"},
                    changes);
}

struct Csv {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  size_t column(const std::string& name) const {
    const auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) FAIL("metrics.csv has no column " << name);
    return size_t(it - header.begin());
  }
  std::vector<int64_t> steps() const {
    std::vector<int64_t> out;
    for (const auto& row : rows) out.push_back(std::stoll(row.at(0)));
    return out;
  }
};

Csv read_csv(const std::string& path) {
  Csv csv;
  const std::vector<std::string> lines = lines_of(read_file(path));
  REQUIRE(!lines.empty());
  auto split = [](const std::string& line) {
    std::vector<std::string> cells;
    size_t start = 0;
    for (size_t comma; (comma = line.find(',', start)) != std::string::npos; start = comma + 1)
      cells.push_back(line.substr(start, comma - start));
    cells.push_back(line.substr(start));
    return cells;
  };
  csv.header = split(lines[0]);
  for (size_t i = 1; i < lines.size(); ++i) {
    csv.rows.push_back(split(lines[i]));
    REQUIRE(csv.rows.back().size() == csv.header.size());
  }
  return csv;
}

// Well-formedness of an XML document as a tag stack: every element closed in order, one root.
// Returns the text content of the <text> elements.
std::vector<std::string> parse_svg(const std::string& xml) {
  std::vector<std::string> stack, texts;
  size_t i = xml.find('<');
  REQUIRE(xml.compare(i, 4, "<svg") == 0);
  bool closed_root = false;
  while (i != std::string::npos && i < xml.size()) {
    REQUIRE(!closed_root);
    const size_t end = xml.find('>', i);
    REQUIRE(end != std::string::npos);
    const std::string tag = xml.substr(i + 1, end - i - 1);
    REQUIRE(tag.find('<') == std::string::npos);
    REQUIRE(std::count(tag.begin(), tag.end(), '"') % 2 == 0);
    if (tag[0] == '/') {
      REQUIRE(!stack.empty());
      REQUIRE(stack.back() == tag.substr(1));
      stack.pop_back();
      closed_root = stack.empty();
    } else if (tag.back() != '/') {
      stack.push_back(tag.substr(0, tag.find(' ')));
    }
    const size_t next = xml.find('<', end);
    const std::string content = xml.substr(end + 1, next == std::string::npos ? std::string::npos : next - end - 1);
    REQUIRE(content.find('&') == std::string::npos);  // nothing here needs an entity
    if (!stack.empty() && stack.back() == "text" && tag[0] != '/') texts.push_back(content);
    i = next;
  }
  REQUIRE(closed_root);
  return texts;
}

// Bitwise equality of every tensor in two safetensors files.
void require_same_tensors(const std::string& a_path, const std::string& b_path) {
  const auto a = io::load_safetensors(a_path), b = io::load_safetensors(b_path);
  REQUIRE(a.size() == b.size());
  for (const auto& [name, ta] : a) {
    INFO(name);
    REQUIRE(b.count(name) == 1);
    const Tensor& tb = b.at(name);
    REQUIRE(ta.dtype() == tb.dtype());
    REQUIRE(ta.shape() == tb.shape());
    const Tensor ca = ta.contiguous(), cb = tb.contiguous();
    const size_t bytes = size_t(ca.numel()) * (ca.dtype() == kFloat32 ? 4 : 8);
    REQUIRE(std::memcmp(ca.raw_data(), cb.raw_data(), bytes) == 0);
  }
}

const char* const kCheckpointFiles[] = {"config.json", "model.safetensors", "optimizer.safetensors",
                                        "trainer_state.json", "metrics.csv", "loss.svg"};

void copy_checkpoint(const std::string& from, const fs::path& to) {
  fs::create_directories(to);
  for (const char* name : kCheckpointFiles) fs::copy_file(fs::path(from) / name, to / name);
}

}  // namespace

TEST_CASE("a run prints its summary and plain progress lines and leaves a loadable checkpoint", "[train]") {
  static const TempDir dir;  // one run, read by every section
  static const std::string corpus = write_corpus(dir), out = dir / "run";
  static const Run r = run(program("LATENT_TRAIN"), tiny_args(corpus, out, 12, {"--eval-every", "6", "--log-every", "4",
                                                                                 "--save-every", "5", "--seed", "7"}));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);

  SECTION("summary before training, sample at the end") {
    for (const char* piece : {"latent-train: DeepSeek-V3 tiny", "config: hidden 64, 3 layers (1 dense)",
                              "parameters: 207968 total, 134240 activated per token",
                              "shapes: ids [2, 33] -> logits [2, 32, 256], MTP 1 logits [2, 31, 256]", "threads: 2 TBB",
                              "--- sample at step 12", "trained to step 12"})
      CHECK(r.out.find(piece) != std::string::npos);
    CHECK(r.out.find("parameters:") < r.out.find("--- sample"));
  }

  SECTION("stderr is not a terminal: one plain line per logged step, no bar") {
    CHECK(r.err.find('\r') == std::string::npos);
    CHECK(r.err.find('\x1b') == std::string::npos);
    std::vector<int64_t> logged;
    for (const std::string& line : lines_of(r.err)) {
      REQUIRE(line.rfind("step ", 0) == 0);
      logged.push_back(std::stoll(line.substr(5, line.find('/') - 5)));
      CHECK(line.find(" | loss ") != std::string::npos);
      CHECK(line.find(" tok/s | ETA ") != std::string::npos);
    }
    CHECK(logged == std::vector<int64_t>{1, 4, 6, 8, 12});  // first, every 4th, evaluations, last
  }

  SECTION("every file is there, nothing staged is left") {
    for (const char* name : kCheckpointFiles) CHECK(fs::is_regular_file(fs::path(out) / name));
    CHECK(!fs::exists(fs::path(out) / ".staging"));
    for (const auto& entry : fs::directory_iterator(out))
      CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);
    CHECK(train::is_checkpoint(out));
  }

  SECTION("the model directory loads and differs from its initialisation") {
    const auto model = models::DeepSeekV3::from_pretrained(out);
    CHECK(model->config().hidden_size == 64);
    CHECK(model->config().aux_loss_alpha == 1e-4);  // --aux-alpha's default replaces the preset's
    manual_seed(7);
    const models::DeepSeekV3 initial(models::DeepSeekV3Config::preset("tiny"));
    const auto trained = model->state_dict(), untrained = initial.state_dict();
    REQUIRE(trained.size() == untrained.size());
    const std::vector<float> a = trained.at("model.layers.0.self_attn.q_a_proj.weight").to_vector<float>();
    const std::vector<float> b = untrained.at("model.layers.0.self_attn.q_a_proj.weight").to_vector<float>();
    CHECK(a != b);
    const Tensor logits = model->forward(from_vector<int64_t>({116, 104, 101, 32}, {1, 4}));
    CHECK(logits.shape() == Shape{1, 4, 256});
  }

  SECTION("optimizer state and trainer state describe step 12") {
    const auto optimizer = io::load_safetensors(out + "/optimizer.safetensors");
    REQUIRE(optimizer.count("state.0.step") == 1);
    CHECK(optimizer.at("state.0.step").item() == 12);
    CHECK(optimizer.count("state.0.exp_avg") == 1);
    CHECK(optimizer.count("state.0.exp_avg_sq") == 1);
    const train::TrainerState state = train::load_trainer_state(out);
    CHECK(state.step == 12);
    CHECK(state.tokens_seen == 12 * 2 * 32);
    CHECK(state.sampler_seed == 7);
    CHECK(state.sampler_offset == 12 * 2);  // one counter per window drawn
    CHECK(state.hyperparameters.at("batch") == 2);
    CHECK(state.hyperparameters.at("steps") == 12);
    CHECK(state.hyperparameters.at("data") == nlohmann::json::array({corpus}));
  }

  SECTION("metrics.csv: fixed columns, routing health per MoE layer, one row per logged step") {
    const Csv csv = read_csv(out + "/metrics.csv");
    const std::vector<std::string> leading = {"step", "loss", "val_loss", "lr", "tokens_per_s"};
    REQUIRE(std::vector<std::string>(csv.header.begin(), csv.header.begin() + 5) == leading);
    for (const char* name : {"total", "balance", "mtp", "grad_norm"}) csv.column(name);
    CHECK(csv.steps() == std::vector<int64_t>{1, 4, 6, 8, 12});
    const double experts = 8, gamma = 1e-3;
    for (const std::string layer : {"moe1", "moe2", "moe3"}) {  // two main MoE layers and the MTP layer
      for (const auto& row : csv.rows) {
        const double imbalance = std::stod(row[csv.column(layer + "_max_over_mean")]);
        const double least = std::stod(row[csv.column(layer + "_min_share")]);
        const double spread = std::stod(row[csv.column(layer + "_bias_spread")]);
        CHECK(imbalance >= 1.0);
        CHECK(imbalance <= experts / 2);  // top-2: no expert takes more than every token once
        CHECK(least >= 0.0);
        CHECK(least <= 1.0 / experts);
        // each update moves a bias by at most gamma, so two differ by at most 2 gamma per step
        CHECK(spread >= 0.0);
        CHECK(spread <= 2 * gamma * std::stod(row[0]) + 1e-6);
      }
    }
    const size_t val = csv.column("val_loss"), lr = csv.column("lr");
    for (const auto& row : csv.rows) CHECK(row[val].empty() == (row[0] != "6" && row[0] != "12"));
    CHECK(std::stod(csv.rows[0][lr]) == Approx(2e-3 / 3));  // first warm-up step
    for (const auto& row : csv.rows) {
      const double loss = std::stod(row[csv.column("loss")]), total = std::stod(row[csv.column("total")]);
      CHECK(total >= loss);  // total adds non-negative balance and MTP terms to the cross-entropy
      CHECK(std::isfinite(std::stod(row[csv.column("tokens_per_s")])));
    }
  }

  SECTION("loss.svg is well-formed XML with axis labels and a legend") {
    const std::vector<std::string> texts = parse_svg(read_file(out + "/loss.svg"));
    for (const char* label : {"step", "loss (nats/byte)", "train loss", "validation loss"})
      CHECK(std::find(texts.begin(), texts.end(), label) != texts.end());
    CHECK(read_file(out + "/loss.svg").find("<polyline") != std::string::npos);
  }
}

TEST_CASE("resume continues the exact trajectory: 15 + 15 steps equal 30 straight steps, bitwise", "[train]") {
  const std::string train = program("LATENT_TRAIN");
  TempDir dir;
  const std::string corpus = write_corpus(dir), resumed = dir / "resumed", straight = dir / "straight";
  REQUIRE(run(train, tiny_args(corpus, resumed, 15, {"--log-every", "5"})).exit_code == 0);
  const Csv before = read_csv(resumed + "/metrics.csv");

  // Only the step count is given: the rest comes from the checkpoint.
  const Run r = run(train, {"--resume", resumed, "--steps", "30", "--log-every", "5", "--threads", "2"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("resumed at step 15") != std::string::npos);
  CHECK(r.out.find("note:") == std::string::npos);
  REQUIRE(run(train, tiny_args(corpus, straight, 30, {"--log-every", "5"})).exit_code == 0);

  require_same_tensors(resumed + "/model.safetensors", straight + "/model.safetensors");
  require_same_tensors(resumed + "/optimizer.safetensors", straight + "/optimizer.safetensors");
  CHECK(train::load_trainer_state(resumed).sampler_offset == train::load_trainer_state(straight).sampler_offset);
  CHECK(train::load_trainer_state(resumed).tokens_seen == 30 * 2 * 32);

  const Csv after = read_csv(resumed + "/metrics.csv"), reference = read_csv(straight + "/metrics.csv");
  CHECK(before.steps() == std::vector<int64_t>{1, 5, 10, 15});
  CHECK(after.steps() == std::vector<int64_t>{1, 5, 10, 15, 16, 20, 25, 30});  // kept, then continued
  for (size_t i = 0; i < before.rows.size(); ++i) CHECK(after.rows[i] == before.rows[i]);
  const size_t loss = after.column("loss");
  CHECK(after.rows.back()[loss] == reference.rows.back()[loss]);
  CHECK(after.rows.back()[after.column("val_loss")] == reference.rows.back()[reference.column("val_loss")]);

  SECTION("a flag given on resume that changes the run is named in a note") {
    TempDir other;
    const Run changed = run(train, {"--resume", resumed, "--out", other / "more", "--steps", "31", "--batch", "4"});
    INFO(changed.out << changed.err);
    CHECK(changed.exit_code == 0);
    CHECK(changed.out.find("note: --batch 4 differs from the checkpoint's 2") != std::string::npos);
  }
}

TEST_CASE("an interrupted run saves at the end of its step and resumes onto the same trajectory", "[train]") {
  const std::string train = program("LATENT_TRAIN");
  TempDir dir;
  const std::string corpus = write_corpus(dir), out = dir / "run";
  std::vector<std::string> args = tiny_args(corpus, out, 100000, {"--save-every", "1"});
  args.insert(args.begin(), train);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, (dir / "out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&files, STDERR_FILENO, (dir / "err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, train.c_str(), &files, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&files);
  // Wait for the first committed save (an event, not a duration), then interrupt; a run that dies
  // first fails the test at once.
  int status = 0;
  bool exited = false;
  while (!fs::exists(fs::path(out) / "trainer_state.json") && !exited) {
    exited = ::waitpid(pid, &status, WNOHANG) == pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  INFO(read_file(dir / "err"));
  REQUIRE(!exited);
  ::kill(pid, SIGINT);
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO(read_file(dir / "err"));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(read_file(dir / "err").find("interrupted: checkpoint at step") != std::string::npos);

  const int64_t stopped = train::load_trainer_state(out).step;
  REQUIRE(stopped >= 1);
  const std::string target = std::to_string(stopped + 3);
  REQUIRE(run(train, {"--resume", out, "--steps", target}).exit_code == 0);
  const std::string straight = dir / "straight";
  REQUIRE(run(train, tiny_args(corpus, straight, stopped + 3)).exit_code == 0);
  require_same_tensors(out + "/model.safetensors", straight + "/model.safetensors");
}

TEST_CASE("the loss falls on a small repetitive corpus", "[train]") {
  const std::string train = program("LATENT_TRAIN");
  TempDir dir;
  const std::string corpus = write_corpus(dir), out = dir / "run";
  const Run r = run(train, tiny_args(corpus, out, 40, {"--batch", "4", "--eval-every", "10"}));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const Csv csv = read_csv(out + "/metrics.csv");
  std::vector<double> val;
  for (const auto& row : csv.rows)
    if (!row[csv.column("val_loss")].empty()) val.push_back(std::stod(row[csv.column("val_loss")]));
  REQUIRE(val.size() == 4);
  INFO("validation losses " << val[0] << " " << val[1] << " " << val[2] << " " << val[3]);
  CHECK(val[0] < std::log(256.0));                // better than uniform already at step 10
  CHECK(val[3] < val[0] - 1.0);                   // and far better by step 40
  CHECK(val[3] < 0.5 * std::log(256.0));
  const double first_train = std::stod(csv.rows.front()[csv.column("loss")]);
  CHECK(first_train == Approx(std::log(256.0)).margin(0.3));  // a fresh model is near uniform
}

TEST_CASE("bad input is refused before training with one clear message and a non-zero exit", "[train]") {
  const std::string train = program("LATENT_TRAIN");
  TempDir dir;
  const std::string corpus = write_corpus(dir), out = dir / "out";
  write_file(dir / "empty.txt", "");
  write_file(dir / "short.txt", std::string(30, 'x'));
  fs::create_directories(dir / "empty-dir");
  fs::create_directories(dir / "not-a-checkpoint");
  write_file(dir / "not-a-checkpoint/notes.txt", "hello");
  nlohmann::json config = nlohmann::json::parse(models::DeepSeekV3Config::preset("tiny").to_json_string());
  config["n_routed_experts"] = 6;  // not divisible by n_group 4
  write_file(dir / "bad-config.json", config.dump());

  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  auto with = [&](const std::vector<std::string>& changes) {
    return with_flags({"--preset", "tiny", "--data", corpus, "--out", out, "--steps", "5", "--batch", "2", "--seq", "32"},
                      changes);
  };
  const std::vector<Case> cases = {
      {with({"--data", dir / "missing.txt"}), "data: '" + dir / "missing.txt" + "' does not exist"},
      {with({"--data", dir / "nowhere/"}), "does not exist"},
      {with({"--data", dir / "empty.txt"}), "data: '" + dir / "empty.txt" + "' is empty"},
      {with({"--data", dir / "empty-dir"}), "holds no non-empty files"},
      {with({"--data", dir / "short.txt"}), "--seq 32 needs at least 33 tokens of training text"},
      {with({"--preset", "huge"}), "unknown preset 'huge'"},
      {with({"--preset", "<drop>", "--config", dir / "bad-config.json"}), "'n_routed_experts' (6) must be divisible by n_group (4)"},
      {with({"--preset", "<drop>", "--config", dir / "missing.json"}), "missing.json"},
      {with({"--preset", "deepseek-v3-671b", "--seq", "32"}), "parameters need about"},
      {with({"--seq", "129"}), "--seq 129 exceeds max_position_embeddings 128"},
      {with({"--batch", "0"}), "--batch must be positive, got 0"},
      {with({"--batch", "-3"}), "--batch must be positive, got -3"},
      {with({"--steps", "0"}), "--steps must be positive, got 0"},
      {with({"--seq", "0"}), "--seq must be positive, got 0"},
      {with({"--lr", "0"}), "--lr must be positive"},
      {with({"--min-lr", "1"}), "--min-lr must be in [0, --lr"},
      {with({"--preset", "<drop>", "--resume", dir / "not-a-checkpoint"}), "is not a checkpoint"},
      {with({"--preset", "<drop>", "--resume", dir / "no-such-dir"}), "is not a checkpoint"},
      {with({"--resume", dir / "not-a-checkpoint"}), "cannot be combined with --preset, --config or --model-type"},
      {with({"--out", dir / "not-a-checkpoint"}), "holds files but no checkpoint"},
  };
  SECTION("each refused input") for (const Case& c : cases) {
    std::string command;
    for (const std::string& arg : c.args) command += arg + " ";
    INFO("latent-train " << command);
    const Run r = run(train, c.args);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    const std::vector<std::string> lines = lines_of(r.err);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].rfind("latent-train: error: ", 0) == 0);
    CHECK(lines[0].find(c.message) != std::string::npos);
    CHECK(r.out.empty());  // refused before the summary, let alone training
    CHECK(!fs::exists(fs::path(out) / "model.safetensors"));
    CHECK(read_file(dir / "not-a-checkpoint/notes.txt") == "hello");
    CHECK(!fs::exists(dir / "no-such-dir"));
  }

  SECTION("a malformed number is refused by the command-line parser") {
    const Run r = run(train, with({"--batch", "abc"}));
    CHECK(r.exit_code != 0);
    CHECK(r.err.find("--batch") != std::string::npos);
  }
  SECTION("resuming a finished run needs a larger --steps") {
    REQUIRE(run(train, tiny_args(corpus, dir / "done", 2)).exit_code == 0);
    const Run r = run(train, {"--resume", dir / "done"});
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("already at step 2 of 2; pass a larger --steps") != std::string::npos);
  }
}

TEST_CASE("a diverging run stops at its first non-finite loss and keeps the last good checkpoint", "[train][nonfinite]") {
  const std::string train = program("LATENT_TRAIN");
  TempDir dir;
  const std::string corpus = write_corpus(dir), out = dir / "run";
  // A learning rate of 1000 blows the weights up within a few steps: a real divergence, no hook.
  const Run r = run(train, tiny_args(corpus, out, 40, {"--lr", "1e3", "--min-lr", "1e3", "--warmup", "0", "--save-every", "2"}));
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  const std::vector<std::string> lines = lines_of(r.err);
  REQUIRE(!lines.empty());
  const std::string& error = lines.back();
  CHECK(error.rfind("latent-train: error: non-finite loss at step ", 0) == 0);
  CHECK(error.find(" = nan") != std::string::npos);  // names the term(s), e.g. "ce = nan, total = nan"
  CHECK(r.err.find("latent-train: error") == r.err.rfind("latent-train: error"));  // one error line
  const int64_t bad_step = std::stoll(error.substr(std::string("latent-train: error: non-finite loss at step ").size()));
  REQUIRE(bad_step > 1);
  REQUIRE(bad_step < 40);
  // The checkpoint is the last save before the bad step, untouched, and finite.
  const int64_t saved_step = (bad_step - 1) / 2 * 2;
  CHECK(error.find("stopped without saving, the checkpoint of step " + std::to_string(saved_step) + " in '" + out + "' is intact") !=
        std::string::npos);
  const nlohmann::json state = nlohmann::json::parse(read_file(out + "/trainer_state.json"));
  CHECK(state["step"] == saved_step);
  for (const auto& [name, t] : io::load_safetensors(out + "/model.safetensors")) {
    INFO(name);
    const std::vector<double> values = t.to(kFloat64).to_vector<double>();
    CHECK(std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); }));
  }
}

TEST_CASE("--on-nonfinite skip steps over non-finite batches, counts them, and stops after --max-skips in a row",
          "[train][nonfinite]") {
  const std::string train = program("LATENT_TRAIN");
  TempDir dir;
  const std::string corpus = write_corpus(dir);
  // LATENT_TRAIN_TEST_NONFINITE (a test-only hook of latent-train) makes the cross-entropy NaN at the
  // listed steps, as a bad batch would, at steps chosen by the test.
  struct Hook {
    explicit Hook(const char* steps) { ::setenv("LATENT_TRAIN_TEST_NONFINITE", steps, 1); }
    ~Hook() { ::unsetenv("LATENT_TRAIN_TEST_NONFINITE"); }
  };

  SECTION("two bad steps are skipped and the run finishes") {
    const Hook hook("3,4");
    const std::string out = dir / "skip";
    const Run r = run(train, tiny_args(corpus, out, 6, {"--on-nonfinite", "skip", "--log-every", "1"}));
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.err.find("non-finite loss at step 3: ce = nan, total = nan: step skipped (no update; 1 skipped so far, 1 in a row)") !=
          std::string::npos);
    CHECK(r.err.find("non-finite loss at step 4: ce = nan, total = nan: step skipped (no update; 2 skipped so far, 2 in a row)") !=
          std::string::npos);
    CHECK(r.err.find("step     5/6 | loss") != std::string::npos);
    CHECK(r.err.find("| skipped 2") != std::string::npos);
    CHECK(r.out.find("trained to step 6") != std::string::npos);
    CHECK(r.out.find("2 non-finite step(s) skipped") != std::string::npos);
    // The skipped steps are in the next logged row's "skipped" cell, and had no update: AdamW counted 4.
    const Csv csv = read_csv(out + "/metrics.csv");
    CHECK(csv.steps() == std::vector<int64_t>{1, 2, 5, 6});
    CHECK(csv.rows[2][csv.column("skipped")] == "2");
    CHECK(csv.rows[3][csv.column("skipped")] == "0");
    CHECK(io::load_safetensors(out + "/optimizer.safetensors").at("state.0.step").item() == 4);
    CHECK(nlohmann::json::parse(read_file(out + "/trainer_state.json"))["tokens_seen"] == 4 * 2 * 32);
  }
  SECTION("more than --max-skips consecutive bad steps stop the run") {
    const Hook hook("2,3,4");
    const Run r = run(train, tiny_args(corpus, dir / "stop", 6, {"--on-nonfinite", "skip", "--max-skips", "2"}));
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK(lines_of(r.err).back() ==
          "latent-train: error: non-finite loss at step 4: ce = nan, total = nan; 3 consecutive steps non-finite, more than "
          "--max-skips 2; stopped without saving, no checkpoint was saved yet in '" + dir / "stop" +
              "' (lower --lr, or resume from the checkpoint)");
  }
  SECTION("a real divergence: every step after it is non-finite, so skipping ends at --max-skips") {
    const Run r = run(train, tiny_args(corpus, dir / "diverged", 40, {"--lr", "1e3", "--min-lr", "1e3", "--warmup", "0",
                                                                    "--on-nonfinite", "skip", "--max-skips", "3"}));
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK(lines_of(r.err).back().find("4 consecutive steps non-finite, more than --max-skips 3") != std::string::npos);
  }
  SECTION("an unknown policy is refused") {
    const Run r = run(train, tiny_args(corpus, dir / "bad", 6, {"--on-nonfinite", "ignore"}));
    CHECK(r.exit_code == 1);
    CHECK(r.err == "latent-train: error: --on-nonfinite must be 'stop' or 'skip', got 'ignore'\n");
  }
}

TEST_CASE("--detect-anomaly names the first op that produced NaN or Inf, and its module", "[train][nonfinite]") {
  const std::string train = program("LATENT_TRAIN");
  TempDir dir;
  const std::string corpus = write_corpus(dir);
  std::vector<std::string> args = tiny_args(corpus, dir / "run", 40, {"--lr", "1e3", "--min-lr", "1e3", "--warmup", "0"});
  args.push_back("--detect-anomaly");
  const Run r = run(train, args);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  const std::string error = lines_of(r.err).back();
  CHECK(error.rfind("latent-train: error: anomaly: ", 0) == 0);
  CHECK(error.find("module model.") != std::string::npos);
  CHECK(r.err.find("non-finite loss") == std::string::npos);  // caught inside the step, before the loss check
}

TEST_CASE("checkpoints survive a crash at any point of a save", "[train][checkpoint]") {
  static const std::string train = program("LATENT_TRAIN");
  static const TempDir dir;  // checkpoints at steps 4 and 8 of one run, shared by the sections
  static const std::string corpus = write_corpus(dir), first = dir / "first", second = dir / "second";
  static const bool trained = run(train, tiny_args(corpus, first, 4)).exit_code == 0 &&
                              run(train, {"--resume", first, "--out", second, "--steps", "8"}).exit_code == 0;
  REQUIRE(trained);
  REQUIRE(train::load_trainer_state(second).step == 8);
  const TempDir scratch;
  const fs::path target = scratch.path / "target", staging = target / ".staging";
  copy_checkpoint(first, target);

  SECTION("a staged save without the commit marker is discarded; the previous checkpoint stands") {
    copy_checkpoint(second, staging);
    fs::remove(staging / "trainer_state.json");                         // the crash came mid-save
    write_file((staging / "optimizer.safetensors.tmp.4242").string(), "partial");
    // A reader that does not recover still sees the previous model.
    CHECK(models::DeepSeekV3::from_pretrained(target.string())->config().hidden_size == 64);
    const train::TrainerState state = train::load_trainer_state(target.string());
    CHECK(state.step == 4);
    CHECK(!fs::exists(staging));
    for (const char* name : kCheckpointFiles)
      CHECK(read_file((target / name).string()) == read_file((fs::path(first) / name).string()));
    const Run r = run(train, {"--resume", target.string(), "--steps", "6"});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
  }

  SECTION("a committed save interrupted while moving files is rolled forward") {
    copy_checkpoint(second, staging);
    write_file((staging / "COMMITTED").string(), "8\n");
    // Two files had already moved when the crash came: the directory mixes steps 4 and 8.
    for (const char* name : {"config.json", "loss.svg"}) fs::rename(staging / name, target / name);
    CHECK(train::is_checkpoint(target.string()));
    CHECK(!fs::exists(staging));
    CHECK(train::load_trainer_state(target.string()).step == 8);
    for (const char* name : kCheckpointFiles)
      CHECK(read_file((target / name).string()) == read_file((fs::path(second) / name).string()));
    require_same_tensors((target / "model.safetensors").string(), second + "/model.safetensors");
  }

  SECTION("a committed save whose files all moved only needs its staging directory removed") {
    fs::create_directories(staging);
    write_file((staging / "COMMITTED").string(), "4\n");
    CHECK(train::load_trainer_state(target.string()).step == 4);
    CHECK(!fs::exists(staging));
  }

  SECTION("a first save that crashed before its commit does not block a new run in that directory") {
    fs::remove_all(target);
    copy_checkpoint(first, staging);
    fs::remove(staging / "trainer_state.json");
    const Run r = run(train, tiny_args(corpus, target.string(), 2));
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    CHECK(train::load_trainer_state(target.string()).step == 2);
  }

  SECTION("the next save after a crash replaces stale staging and commits normally") {
    copy_checkpoint(second, staging);  // uncommitted
    const Run r = run(train, {"--resume", target.string(), "--steps", "5"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(!fs::exists(staging));
    CHECK(train::load_trainer_state(target.string()).step == 5);
  }
}

TEST_CASE("latent-generate loads a checkpoint and streams the prompt plus N bytes", "[train][generate]") {
  const std::string generate = program("LATENT_GENERATE");
  static const TempDir dir;  // one checkpoint for every section
  static const std::string corpus = write_corpus(dir), out = dir / "run";
  static const bool trained = run(program("LATENT_TRAIN"), tiny_args(corpus, out, 20)).exit_code == 0;
  REQUIRE(trained);

  SECTION("greedy output is the library's generate(), after the prompt") {
    const Run r = run(generate, {out, "--prompt", "the quick", "-n", "20", "--temperature", "0"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    REQUIRE(r.out.size() == 9 + 20 + 1);
    CHECK(r.out.rfind("the quick", 0) == 0);
    CHECK(r.out.back() == '\n');
    const auto model = models::DeepSeekV3::from_pretrained(out);
    models::DeepSeekV3::GenerateOptions options;
    options.max_new_tokens = 20;
    const std::vector<int64_t> expected =
        model->generate(from_vector<int64_t>({116, 104, 101, 32, 113, 117, 105, 99, 107}), options).to_vector<int64_t>();
    for (size_t i = 0; i < expected.size(); ++i) CHECK(int64_t(static_cast<unsigned char>(r.out[i])) == expected[i]);
  }

  SECTION("the prompt can come from standard input; a seed makes sampling repeatable") {
    const Run a = run(generate, {out, "-n", "15", "--seed", "3"}, "jumps over");
    const Run b = run(generate, {out, "-n", "15", "--seed", "3", "--top-k", "5", "--temperature", "1.5"}, "jumps over");
    const Run c = run(generate, {out, "-n", "15", "--seed", "3", "--top-k", "5", "--temperature", "1.5"}, "jumps over");
    REQUIRE(a.exit_code == 0);
    CHECK(a.out.size() == 10 + 15 + 1);
    CHECK(a.out.rfind("jumps over", 0) == 0);
    CHECK(b.out == c.out);
  }

  SECTION("a request beyond the context is shortened, with a note") {
    const Run r = run(generate, {out, "-p", "0123456789", "-n", "500", "-t", "0"});
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.size() == 128 + 1);  // max_position_embeddings of tiny, and the newline
    CHECK(r.err.find("generating 118 tokens") != std::string::npos);
  }

  SECTION("bad input is refused with one message, before any output") {
    TempDir empty;
    const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
        {{dir / "no-such-dir", "-p", "x"}, "is not a directory"},
        {{empty.path.string(), "-p", "x"}, "is not a model directory: it has no config.json"},
        {{out, "-p", "x", "-n", "-1"}, "--max-tokens must be >= 0"},
        {{out, "-p", "x", "-t", "-1"}, "--temperature must be >= 0"},
        {{out, "-p", "x", "-k", "-2"}, "--top-k must be >= 0"},
        {{out}, "the prompt is empty"},
        {{out, "-p", std::string(200, 'a')}, "leaves no room within max_position_embeddings 128"},
    };
    for (const auto& [args, message] : cases) {
      INFO(args[0] << " " << message);
      const Run r = run(generate, args);
      CHECK(r.exit_code == 1);
      CHECK(r.out.empty());
      const std::vector<std::string> lines = lines_of(r.err);
      REQUIRE(lines.size() == 1);
      CHECK(lines[0].rfind("latent-generate: error: ", 0) == 0);
      CHECK(lines[0].find(message) != std::string::npos);
    }
  }
}

TEST_CASE("latent-train --model-type llama trains through the same job, resumes bitwise, and latent-generate reads it",
          "[train][llama]") {
  const std::string train = program("LATENT_TRAIN");
  const TempDir dir;
  const std::string corpus = write_corpus(dir), out = dir / "llama", half = dir / "half";
  const std::vector<std::string> llama = {"--model-type", "llama", "--log-every", "2"};
  const Run r = run(train, tiny_args(corpus, out, 6, llama));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  for (const char* piece : {"latent-train: Llama tiny", "config: hidden 64, 2 layers, 4 heads (2 key-value) of 16, MLP width 128",
                            "shapes: ids [2, 33] -> logits [2, 32, 256]", "--- sample at step 6", "trained to step 6"})
    CHECK(r.out.find(piece) != std::string::npos);
  CHECK(r.out.find("aux_alpha") == std::string::npos);  // no DeepSeek-V3 settings for a dense model
  CHECK(r.err.find("max/mean load") == std::string::npos);

  // The checkpoint is a Llama directory: the library's dispatch opens it as one, with the preset's sizes.
  CHECK(nlohmann::json::parse(read_file(out + "/config.json"))["model_type"] == "llama");
  const auto model = models::from_pretrained(out);
  CHECK(model->model_type() == "llama");
  CHECK(model->num_parameters() == train::llama_preset("tiny").num_parameters());
  CHECK(train::load_trainer_state(out).hyperparameters.at("model_type") == "llama");

  // One loss term: the metrics have no balance, MTP or routing columns, and total is the cross-entropy.
  const Csv csv = read_csv(out + "/metrics.csv");
  CHECK(csv.header == std::vector<std::string>{"step", "loss", "val_loss", "lr", "tokens_per_s", "val_bpb", "total", "grad_norm",
                                              "skipped"});
  CHECK(csv.steps() == std::vector<int64_t>{1, 2, 4, 6});
  for (const auto& row : csv.rows) CHECK(row[csv.column("total")] == row[csv.column("loss")]);

  // 3 + 3 steps equal 6 straight steps, bitwise; --resume needs no --model-type.
  REQUIRE(run(train, tiny_args(corpus, half, 3, llama)).exit_code == 0);
  const Run resumed = run(train, {"--resume", half, "--steps", "6", "--threads", "2"});
  INFO(resumed.err);
  REQUIRE(resumed.exit_code == 0);
  CHECK(resumed.out.find("latent-train: Llama " + half + " (resumed at step 3)") != std::string::npos);
  require_same_tensors(half + "/model.safetensors", out + "/model.safetensors");
  require_same_tensors(half + "/optimizer.safetensors", out + "/optimizer.safetensors");

  // latent-generate opens the trained directory and continues the prompt greedily as the library does.
  const Run g = run(program("LATENT_GENERATE"), {out, "--prompt", "the quick", "-n", "12", "--temperature", "0"});
  INFO(g.err);
  REQUIRE(g.exit_code == 0);
  REQUIRE(g.out.size() == 9 + 12 + 1);
  models::GenerateOptions greedy;
  greedy.max_new_tokens = 12;
  const std::vector<int64_t> expected =
      model->generate(from_vector<int64_t>({116, 104, 101, 32, 113, 117, 105, 99, 107}), greedy).to_vector<int64_t>();
  for (size_t i = 0; i < expected.size(); ++i) CHECK(int64_t(static_cast<unsigned char>(g.out[i])) == expected[i]);

  // A Llama config.json trains through --config too; DeepSeek-V3's loss weights are refused for it.
  train::llama_preset("tiny").to_json_file(dir / "llama.json");
  const Run from_config = run(train, tiny_args(corpus, dir / "from-config", 1, {"--preset", "<drop>", "--config", dir / "llama.json"}));
  INFO(from_config.err);
  CHECK(from_config.exit_code == 0);
  CHECK(from_config.out.find("latent-train: Llama " + (dir / "llama.json")) != std::string::npos);
  const Run refused = run(train, tiny_args(corpus, dir / "refused", 1, {"--model-type", "llama", "--mtp-lambda", "0.5"}));
  CHECK(refused.exit_code == 1);
  CHECK(refused.err == "latent-train: error: --mtp-lambda weights a DeepSeek-V3 loss term; the llama model has none\n");
  const Run mismatch = run(train, tiny_args(corpus, dir / "mismatch", 1, {"--preset", "<drop>", "--model-type", "deepseek_v3",
                                                                            "--config", dir / "llama.json"}));
  CHECK(mismatch.exit_code == 1);
  CHECK(mismatch.err.find("--model-type deepseek_v3 but " + (dir / "llama.json") + " describes a llama model") != std::string::npos);
}

TEST_CASE("the Trainer in a program of one's own: an interrupt request stops after the step, saved and resumable",
          "[train][trainer]") {
  const TempDir dir;
  train::TrainerOptions options;
  options.model_type = "llama", options.preset = "tiny", options.data = {write_corpus(dir)}, options.out_dir = dir / "run";
  options.steps = 4, options.batch = 2, options.seq = 16, options.warmup = 0, options.min_lr = options.lr;
  options.sample_tokens = 4;
  train::Trainer trainer(options);
  CHECK(trainer.model().model_type() == "llama");
  CHECK(trainer.log().columns() == std::vector<std::string>{"step", "loss", "val_loss", "lr", "tokens_per_s", "val_bpb",
                                                             "total", "grad_norm", "skipped"});

  // One step by hand: the global losses hold the model's one term, and the optimizer moved the weights.
  const Tensor before = trainer.model().parameters().front().clone();
  const train::Trainer::StepResult first = trainer.step();
  CHECK(!first.skipped());
  REQUIRE(first.losses.terms.size() == 1);
  CHECK(first.losses.terms[0].first == "ce");
  CHECK(first.losses.total == first.losses.term("ce"));
  CHECK(std::isfinite(first.grad_norm));
  CHECK(trainer.state().step == 1);
  CHECK(max(abs(trainer.model().parameters().front() - before)).item() > 0);

  // A request made before run() (as SIGINT's handler makes it) ends run() after its first step.
  train::request_interrupt();
  REQUIRE(train::interrupt_requested());
  CHECK(trainer.run() == 130);
  train::clear_interrupt_request();
  CHECK(trainer.state().step == 2);
  CHECK(train::load_trainer_state(dir / "run").step == 2);

  options.resume_dir = dir / "run", options.out_dir.clear();
  train::Trainer resumed(options);
  CHECK(resumed.state().step == 2);
  CHECK(resumed.run() == 0);
  CHECK(train::load_trainer_state(dir / "run").step == 4);
}

TEST_CASE("--tokenizer bpe:N trains a BPE on the training text; the model, checkpoint, metrics and latent-generate use it",
          "[train][tokenizer]") {
  const TempDir dir;
  const std::string corpus = write_corpus(dir), out = dir / "bpe", train = program("LATENT_TRAIN");
  const Run r = run(train, tiny_args(corpus, out, 4, {"--tokenizer", "bpe:300", "--eval-every", "2"}));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);

  // The checkpoint holds the tokenizer the model's vocabulary was sized for, trained on the training
  // text: this corpus repeats one sentence, so its BPE runs out of pairs before 300 ids.
  const auto tokenizer = train::load_tokenizer(out);
  REQUIRE(tokenizer);
  CHECK(tokenizer->vocab_size() > 270);
  CHECK(tokenizer->vocab_size() < 300);
  const std::string ids = std::to_string(tokenizer->vocab_size());
  CHECK(r.out.find("tokenizer: byte-level BPE of " + ids + " ids (bpe:300), saved with the checkpoint") != std::string::npos);
  const auto model = models::from_pretrained(out);
  CHECK(model->vocab_size() == tokenizer->vocab_size());
  CHECK(train::load_trainer_state(out).hyperparameters.at("tokenizer") == "bpe:300");
  const std::string sentence = "the quick brown fox jumps over the lazy dog.\n";
  CHECK(tokenizer->encode(sentence).size() < sentence.size() / 2);  // the repeated words became tokens
  CHECK(tokenizer->decode(tokenizer->encode(sentence)) == sentence);

  // Bits per byte: cross-entropy per token over the bytes those tokens stand for, so below the
  // per-token loss in bits where tokens are longer than one byte.
  const Csv csv = read_csv(out + "/metrics.csv");
  const std::vector<std::string>& last = csv.rows.back();
  const double val_loss = std::stod(last[csv.column("val_loss")]), val_bpb = std::stod(last[csv.column("val_bpb")]);
  CHECK(val_bpb > 0);
  CHECK(val_bpb < 0.6 * val_loss / std::log(2.0));

  // latent-generate encodes the prompt and decodes the output through the checkpoint's tokenizer.
  const Run g = run(program("LATENT_GENERATE"), {out, "--prompt", "the quick", "-n", "6", "--temperature", "0"});
  INFO(g.err);
  REQUIRE(g.exit_code == 0);
  const std::vector<int64_t> prompt = tokenizer->encode("the quick");
  models::GenerateOptions greedy;
  greedy.max_new_tokens = 6;
  const std::vector<int64_t> expected = model->generate(from_vector(prompt), greedy).to_vector<int64_t>();
  CHECK(g.out == tokenizer->decode(expected) + "\n");

  // --resume keeps the checkpoint's tokenizer and refuses another.
  const Run resumed = run(train, {"--resume", out, "--steps", "6", "--threads", "2"});
  INFO(resumed.err);
  CHECK(resumed.exit_code == 0);
  CHECK(resumed.out.find("tokenizer: byte-level BPE of " + ids + " ids (the checkpoint's tokenizer.json)") != std::string::npos);
  const Run both = run(train, {"--resume", out, "--steps", "8", "--tokenizer", "bpe:400"});
  CHECK(both.exit_code == 1);
  CHECK(both.err == "latent-train: error: --resume continues with the checkpoint's own tokenizer; it cannot be combined "
                    "with --tokenizer\n");
}

TEST_CASE("--tokenizer PATH trains on a tokenizer.json's ids; byte-level runs report bits per byte too", "[train][tokenizer]") {
  const TempDir dir;
  const std::string corpus = write_corpus(dir), train = program("LATENT_TRAIN");
  tokenizer::BpeTrainerOptions options;
  options.vocab_size = 280;
  const tokenizer::Tokenizer trained = tokenizer::train_bpe({read_file(corpus)}, options);
  REQUIRE(trained.vocab_size() == 280);
  trained.save(dir / "tokenizer.json");
  const Run r = run(train, tiny_args(corpus, dir / "path", 2, {"--tokenizer", dir / "tokenizer.json"}));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(train::load_tokenizer(dir / "path")->to_json() == tokenizer::Tokenizer::from_file(dir / "tokenizer.json").to_json());
  CHECK(models::from_pretrained(dir / "path")->vocab_size() == 280);

  // Without a tokenizer a token is a byte: bits per byte is the loss in bits, and no tokenizer.json
  // is written (one an overwritten run left in the directory is not the model's).
  std::vector<std::string> overwrite = tiny_args(corpus, dir / "path", 2);
  overwrite.push_back("--overwrite");
  const Run bytes = run(train, overwrite);
  REQUIRE(bytes.exit_code == 0);
  CHECK(!train::load_tokenizer(dir / "path"));
  const Csv csv = read_csv(dir / "path/metrics.csv");
  const std::vector<std::string>& last = csv.rows.back();
  CHECK(std::stod(last[csv.column("val_bpb")]) ==
        Approx(std::stod(last[csv.column("val_loss")]) / std::log(2.0)).epsilon(1e-5));

  // Bad specifications and files are refused before training.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bpe:abc", "--tokenizer bpe:abc: expected bpe:N with N > 257"},
      {"bpe:100", "--tokenizer bpe:100: expected bpe:N with N > 257"},
      {dir / "missing.json", "missing.json"},
  };
  for (const auto& [spec, message] : cases) {
    const Run bad = run(train, tiny_args(corpus, dir / "bad", 1, {"--tokenizer", spec}));
    INFO(spec << ": " << bad.err);
    CHECK(bad.exit_code == 1);
    CHECK(bad.err.rfind("latent-train: error: ", 0) == 0);
    CHECK(bad.err.find(message) != std::string::npos);
  }
}

namespace {

std::string saved_precision(const std::string& dir) {
  return train::load_trainer_state(dir).hyperparameters.at("precision").get<std::string>();
}

// The hook of core/matmul_precision.hpp: bf16_matmul_supported() answers no, as on a build without
// oneDNN or a CPU without avx512_bf16.
constexpr const char* kNoBf16 = "LATENT_TEST_NO_BF16=1";

}  // namespace

TEST_CASE("--precision: the default, the summary line, trainer_state.json, and resume keeps it", "[train][precision]") {
  const std::string train = program("LATENT_TRAIN");
  const TempDir dir;
  const std::string corpus = write_corpus(dir);

  SECTION("fp32 asked for: recorded, kept on resume; a different --precision on resume overrides it with a note") {
    const std::string out = dir / "fp32";
    const Run r = run(train, tiny_args(corpus, out, 3, {"--precision", "fp32"}));
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("  precision: fp32 (--precision fp32)\n") != std::string::npos);
    CHECK(r.out.find("  GEMMs: fp32 and f64 GEMMs on OpenBLAS") != std::string::npos);
    CHECK(saved_precision(out) == "fp32");
    const Run kept = run(train, {"--resume", out, "--steps", "4"});
    INFO(kept.out << kept.err);
    REQUIRE(kept.exit_code == 0);
    CHECK(kept.out.find("  precision: fp32 (the checkpoint's)\n") != std::string::npos);
    CHECK(kept.out.find("note:") == std::string::npos);
    CHECK(saved_precision(out) == "fp32");
    if (!bf16_available()) return;
    const Run changed = run(train, {"--resume", out, "--steps", "5", "--precision", "bf16"});
    INFO(changed.out << changed.err);
    REQUIRE(changed.exit_code == 0);
    CHECK(changed.out.find("  precision: bf16 (--precision bf16)") != std::string::npos);
    CHECK(changed.out.find("note: --precision bf16 differs from the checkpoint's fp32 (the resumed run leaves the original "
                           "trajectory)") != std::string::npos);
    CHECK(saved_precision(out) == "bf16");
  }

  SECTION("the default is bf16 where it runs, named with its reason, and resume keeps it") {
    if (!bf16_available()) return;
    const std::string out = dir / "default";
    const Run r = run(train, tiny_args(corpus, out, 3));
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("  precision: bf16 (default: oneDNN, CPU has avx512_bf16): bf16 GEMM operands, fp32 accumulation; "
                     "weights, gradients, AdamW and the MoE router in fp32\n") != std::string::npos);
    CHECK(r.out.find("bf16 GEMMs on oneDNN") != std::string::npos);
    CHECK(saved_precision(out) == "bf16");
    // The master weights stay float32 in the checkpoint.
    for (const auto& [name, t] : io::load_safetensors(out + "/model.safetensors")) CHECK(t.dtype() == kFloat32);
    const Run kept = run(train, {"--resume", out, "--steps", "4"});
    INFO(kept.out << kept.err);
    REQUIRE(kept.exit_code == 0);
    CHECK(kept.out.find("  precision: bf16 (the checkpoint's)") != std::string::npos);
    CHECK(saved_precision(out) == "bf16");
  }

  SECTION("a checkpoint from before --precision existed resumes in fp32, as it was trained") {
    const std::string out = dir / "old";
    REQUIRE(run(train, tiny_args(corpus, out, 3, {"--precision", "fp32"})).exit_code == 0);
    nlohmann::json state = nlohmann::json::parse(read_file(out + "/trainer_state.json"));
    REQUIRE(state.at("hyperparameters").erase("precision") == 1);
    write_file(out + "/trainer_state.json", state.dump());
    const Run r = run(train, {"--resume", out, "--steps", "4"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("  precision: fp32 (the checkpoint's)\n") != std::string::npos);
    CHECK(saved_precision(out) == "fp32");
  }

  SECTION("a malformed --precision is refused in one line") {
    const Run r = run(train, tiny_args(corpus, dir / "bad", 3, {"--precision", "fp16"}));
    CHECK(r.exit_code == 1);
    CHECK(r.err == "latent-train: error: --precision must be fp32 or bf16, got 'fp16'\n");
    CHECK(r.out.empty());
  }
}

TEST_CASE("bf16 where it cannot run: fp32 by default with the reason, refused when asked for or resumed",
          "[train][precision]") {
  const std::string train = program("LATENT_TRAIN"), generate = program("LATENT_GENERATE");
  const TempDir dir;
  const std::string corpus = write_corpus(dir);
  const std::string hook_reason = "LATENT_TEST_NO_BF16=1 is set (a test hook standing for a build without oneDNN or a "
                                  "CPU without avx512_bf16)";

  const Run fallback = run(train, tiny_args(corpus, dir / "fallback", 3), "", kNoBf16);
  INFO(fallback.out << fallback.err);
  REQUIRE(fallback.exit_code == 0);
  CHECK(fallback.out.find("  precision: fp32 (default; bf16 unavailable: " + hook_reason + ")\n") != std::string::npos);
  CHECK(fallback.out.find("bf16 GEMMs on unavailable: " + hook_reason) != std::string::npos);
  CHECK(saved_precision(dir / "fallback") == "fp32");

  const Run refused = run(train, tiny_args(corpus, dir / "refused", 3, {"--precision", "bf16"}), "", kNoBf16);
  CHECK(refused.exit_code == 1);
  CHECK(refused.err == "latent-train: error: --precision bf16 cannot run here: " + hook_reason + "; use --precision fp32\n");
  CHECK(refused.out.empty());
  CHECK(!fs::exists(dir / "refused"));

  const Run generate_refused = run(generate, {dir / "fallback", "-p", "the", "--precision", "bf16"}, "", kNoBf16);
  CHECK(generate_refused.exit_code == 1);
  CHECK(generate_refused.err == "latent-generate: error: --precision bf16 cannot run here: " + hook_reason +
                                    "; use --precision fp32\n");
  CHECK(generate_refused.out.empty());

  if (!bf16_available()) return;
  // A bf16 checkpoint taken to a machine without bf16: refused, unless --precision fp32 says so.
  const std::string out = dir / "bf16";
  REQUIRE(run(train, tiny_args(corpus, out, 3, {"--precision", "bf16"})).exit_code == 0);
  const Run resume_refused = run(train, {"--resume", out, "--steps", "4"}, "", kNoBf16);
  CHECK(resume_refused.exit_code == 1);
  CHECK(resume_refused.err == "latent-train: error: the checkpoint in '" + out + "' was trained with --precision bf16, "
                                  "which cannot run here: " + hook_reason + "; pass --precision fp32 to continue it in float32\n");
  CHECK(train::load_trainer_state(out).step == 3);
  const Run in_fp32 = run(train, {"--resume", out, "--steps", "4", "--precision", "fp32"}, "", kNoBf16);
  INFO(in_fp32.out << in_fp32.err);
  REQUIRE(in_fp32.exit_code == 0);
  CHECK(in_fp32.out.find("note: --precision fp32 differs from the checkpoint's bf16") != std::string::npos);
  CHECK(saved_precision(out) == "fp32");
}

// What the flag changes is the model's arithmetic, not its interface: on this tiny model the greedy
// bytes of fp32 and bf16 coincide (measured), so the test holds the program to the library's bf16
// generation, sampled with a seed, byte for byte.
TEST_CASE("latent-generate --precision bf16 generates at bf16 as the library does", "[train][generate][precision]") {
  if (!bf16_available()) return;
  const TempDir dir;
  const std::string out = dir / "run";
  REQUIRE(run(program("LATENT_TRAIN"), tiny_args(write_corpus(dir), out, 20)).exit_code == 0);
  const Run r = run(program("LATENT_GENERATE"), {out, "--prompt", "the quick", "-n", "40", "--temperature", "0.9",
                                                 "--top-k", "20", "--seed", "5", "--precision", "bf16"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.size() == 9 + 40 + 1);
  const auto model = models::from_pretrained(out);
  model->eval();
  models::GenerateOptions options;
  options.max_new_tokens = 40, options.temperature = 0.9, options.top_k = 20, options.seed = 5;
  std::vector<int64_t> expected;
  {
    MatmulPrecisionGuard at(MatmulPrecision::kBFloat16);
    expected = model->generate(from_vector<int64_t>({116, 104, 101, 32, 113, 117, 105, 99, 107}), options).to_vector<int64_t>();
  }
  std::vector<int64_t> got;
  for (char c : r.out.substr(0, 9 + 40)) got.push_back(int64_t(static_cast<unsigned char>(c)));
  CHECK(got == expected);
}

TEST_CASE("latent-train at bf16 is bitwise repeatable, and 1 and 2 threads train the same weights", "[train][precision]") {
  if (!bf16_available()) return;
  const std::string train = program("LATENT_TRAIN");
  const TempDir dir;
  const std::string corpus = write_corpus(dir);
  for (const char* precision : {"bf16", "fp32"}) {
    INFO("--precision " << precision);
    const std::string a = dir / (std::string(precision) + "-a"), b = dir / (std::string(precision) + "-b"),
                      one = dir / (std::string(precision) + "-1");
    for (const auto& [out, threads] : {std::pair{a, "2"}, {b, "2"}, {one, "1"}}) {
      const Run r = run(train, tiny_args(corpus, out, 8, {"--precision", precision, "--threads", threads}));
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
    }
    require_same_tensors(a + "/model.safetensors", b + "/model.safetensors");
    require_same_tensors(a + "/optimizer.safetensors", b + "/optimizer.safetensors");
    require_same_tensors(a + "/model.safetensors", one + "/model.safetensors");
    require_same_tensors(a + "/optimizer.safetensors", one + "/optimizer.safetensors");
  }
  // The two precisions did train differently.
  const auto bf16 = io::load_safetensors(dir / "bf16-a/model.safetensors"), fp32 = io::load_safetensors(dir / "fp32-a/model.safetensors");
  CHECK(max(abs(bf16.at("model.embed_tokens.weight") - fp32.at("model.embed_tokens.weight"))).item() > 0);
}

TEST_CASE("latent-generate runs and latent-train --init-from fine-tunes a published-layout directory",
          "[train][generate][published]") {
  // tests/data/dsv3-published: FP8 block-scaled linear weights, BF16 elsewhere, three shards + index.
  const std::string published = latent::testing::test_data("dsv3-published");
  TempDir dir;

  const Run g = run(program("LATENT_GENERATE"), {published, "--prompt", "the quick", "-n", "8", "--temperature", "0"});
  INFO(g.err);
  REQUIRE(g.exit_code == 0);
  REQUIRE(g.out.size() == 9 + 8 + 1);
  const auto initial = models::DeepSeekV3::from_pretrained(published);
  models::GenerateOptions greedy;
  greedy.max_new_tokens = 8;
  const std::vector<int64_t> expected =
      initial->generate(from_vector<int64_t>({116, 104, 101, 32, 113, 117, 105, 99, 107}), greedy).to_vector<int64_t>();
  for (size_t i = 0; i < expected.size(); ++i) CHECK(int64_t(static_cast<unsigned char>(g.out[i])) == expected[i]);

  const std::string corpus = write_corpus(dir), out = dir / "fine-tuned";
  const Run t = run(program("LATENT_TRAIN"), {"--init-from", published, "--data", corpus, "--out", out, "--steps", "3",
                                              "--batch", "2", "--seq", "16", "--warmup", "1", "--lr", "1e-3",
                                              "--threads", "2", "--eval-every", "0", "--save-every", "0"});
  INFO(t.out << t.err);
  REQUIRE(t.exit_code == 0);
  CHECK(t.out.find("latent-train: DeepSeek-V3 initialised from " + published) != std::string::npos);
  CHECK(train::load_trainer_state(out).step == 3);
  // The saved directory loads; its config is the published one's, its weights moved from there by training.
  const auto tuned = models::DeepSeekV3::from_pretrained(out);
  CHECK(tuned->config().to_json_string() == initial->config().to_json_string());
  CHECK(!tuned->config().quantization_config);  // latent's save is float32
  double largest_change = 0;
  const auto before = initial->state_dict(), after = tuned->state_dict();
  for (const auto& [name, t0] : before) {
    const std::vector<float> a = t0.to_vector<float>(), b = after.at(name).to_vector<float>();
    for (size_t i = 0; i < a.size(); ++i) largest_change = std::max(largest_change, double(std::abs(a[i] - b[i])));
  }
  CHECK(largest_change > 0);
  CHECK(largest_change < 0.05);  // three AdamW steps of lr <= 1e-3 move no weight by more than ~3e-3 (+ bias updates)

  const Run both = run(program("LATENT_TRAIN"), {"--init-from", published, "--resume", out});
  CHECK(both.exit_code != 0);
  CHECK(both.err.find("--init-from starts from that directory's own model") != std::string::npos);
}

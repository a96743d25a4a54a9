// Crash safety of latent-train's checkpoints, end to end: the process killed at every crash point of
// a save (LATENT_FAULT_INJECT) and by real SIGKILLs at seeded random moments, then resumed; the
// checkpoint found is always exactly the previous or the new one, and the resumed run ends on the
// uninterrupted run's weights, bitwise.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "../helpers.hpp"
#include "../programs.hpp"

extern char** environ;

using namespace latent;
namespace fs = std::filesystem;
using latent::testing::program;
using latent::testing::read_file;
using latent::testing::TempDir;

namespace {

// A started latent-train; stdout and stderr go to files so a killed process leaves what it printed.
struct Process {
  pid_t pid = 0;
  std::string out_path, err_path;

  // Waits for the end; returns the raw wait status.
  int wait() const {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
  }
  std::string err() const { return read_file(err_path); }
};

// Starts `binary args...` with `fault` ("<save>:<point>", or empty for none) as LATENT_FAULT_INJECT.
Process start(const std::string& binary, std::vector<std::string> args, const TempDir& io, const std::string& fault = "") {
  args.insert(args.begin(), binary);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "LATENT_FAULT_INJECT=", 20) != 0) env_strings.emplace_back(*e);
  if (!fault.empty()) env_strings.push_back("LATENT_FAULT_INJECT=" + fault);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  Process p{0, io / "out", io / "err"};
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, p.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&files, STDERR_FILENO, p.err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int rc = posix_spawn(&p.pid, binary.c_str(), &files, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&files);
  REQUIRE(rc == 0);
  return p;
}

// Runs to the end and requires a clean exit.
void run_ok(const std::string& binary, const std::vector<std::string>& args, const TempDir& io) {
  const Process p = start(binary, args, io);
  const int status = p.wait();
  INFO(p.err());
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

std::string write_corpus(const TempDir& dir) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog.\n";
  std::ofstream(dir / "corpus.txt", std::ios::binary) << text;
  return dir / "corpus.txt";
}

// Tiny model, small batches, a flat learning rate after a 2-step warm-up that even --steps 2 keeps,
// so runs of different lengths follow one trajectory; two threads (bitwise determinism needs a fixed
// count). One metrics row per step, so metrics.csv shows which save it belongs to.
std::vector<std::string> tiny_args(const std::string& corpus, const std::string& out, int64_t steps, int64_t save_every) {
  return {"--preset", "tiny", "--data", corpus, "--out", out, "--steps", std::to_string(steps),
          "--batch", "2", "--seq", "32", "--warmup", "2", "--lr", "2e-3", "--min-lr", "2e-3", "--threads", "2",
          "--save-every", std::to_string(save_every), "--log-every", "1"};
}

std::vector<std::string> csv_column(const std::string& csv_text, size_t column) {
  std::vector<std::string> cells;
  std::stringstream lines(csv_text);
  std::string line;
  std::getline(lines, line);  // header
  while (std::getline(lines, line)) {
    std::stringstream cells_of_line(line);
    std::string cell;
    for (size_t i = 0; i <= column && std::getline(cells_of_line, cell, ','); ++i) {}
    cells.push_back(cell);
  }
  return cells;
}

// `dir` (already recovered) is, file by file, the checkpoint `reference` wrote: the same weights,
// optimizer state, config, trainer position and logged losses. Wall-clock fields (elapsed seconds,
// tokens/s) are the only things allowed to differ. Nothing staged or temporary is left.
void require_same_checkpoint(const std::string& dir, const std::string& reference) {
  for (const char* name : {"model.safetensors", "optimizer.safetensors", "config.json"}) {
    INFO(name);
    REQUIRE(read_file(dir + "/" + name) == read_file(reference + "/" + name));
  }
  const train::TrainerState got = train::load_trainer_state(dir), want = train::load_trainer_state(reference);
  REQUIRE(got.step == want.step);
  REQUIRE(got.sampler_offset == want.sampler_offset);
  REQUIRE(got.tokens_seen == want.tokens_seen);
  const std::string metrics = read_file(dir + "/metrics.csv"), reference_metrics = read_file(reference + "/metrics.csv");
  REQUIRE(csv_column(metrics, 0) == csv_column(reference_metrics, 0));  // steps
  REQUIRE(csv_column(metrics, 1) == csv_column(reference_metrics, 1));  // training loss
  REQUIRE(read_file(dir + "/loss.svg").find("</svg>") != std::string::npos);
  REQUIRE(!fs::exists(fs::path(dir) / ".staging"));
  for (const auto& entry : fs::directory_iterator(dir)) REQUIRE(!io::is_temporary_name(entry.path().filename().string()));
}

}  // namespace

TEST_CASE("a save killed at any of its crash points leaves the old or the new checkpoint, and resume ends bitwise "
          "on the uninterrupted weights", "[train][crash]") {
  const std::string train = program("LATENT_TRAIN");
  const TempDir dir, io;
  const std::string corpus = write_corpus(dir);
  // The checkpoints a crash may leave (steps 2 and 4) and where the run ends (step 6), each from an
  // uninterrupted run of its own.
  const std::string at2 = dir / "at2", at4 = dir / "at4", at6 = dir / "at6";
  run_ok(train, tiny_args(corpus, at2, 2, 2), io);
  run_ok(train, tiny_args(corpus, at4, 4, 2), io);
  run_ok(train, tiny_args(corpus, at6, 6, 2), io);

  // Crash in the second save (step 4) of a 6-step run, at point 1, 2, ... until a point number
  // beyond the save's last lets the run finish.
  std::vector<int64_t> recovered_steps;
  int64_t commit_point = 0;
  for (int64_t point = 1;; ++point) {
    INFO("crash point " << point);
    const std::string out = dir / ("crash" + std::to_string(point));
    const Process p = start(train, tiny_args(corpus, out, 6, 2), io, "2:" + std::to_string(point));
    const int status = p.wait();
    const std::string err = p.err();
    INFO(err);
    if (WIFEXITED(status)) {
      REQUIRE(WEXITSTATUS(status) == 0);
      REQUIRE(point > 30);  // six files of four points each, the commit marker's four, the moves
      break;
    }
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);
    REQUIRE(err.find("fault injection: killed at crash point " + std::to_string(point) + ":") != std::string::npos);
    if (err.find("renamed into place (directory not yet synced) " + out + "/.staging/COMMITTED\n") != std::string::npos)
      commit_point = point;

    const int64_t step = train::load_trainer_state(out).step;  // recovers
    REQUIRE((step == 2 || step == 4));
    require_same_checkpoint(out, step == 2 ? at2 : at4);
    recovered_steps.push_back(step);

    run_ok(train, {"--resume", out}, io);  // every other flag comes from the checkpoint
    REQUIRE(read_file(out + "/model.safetensors") == read_file(at6 + "/model.safetensors"));
    REQUIRE(read_file(out + "/optimizer.safetensors") == read_file(at6 + "/optimizer.safetensors"));
    REQUIRE(train::load_trainer_state(out).step == 6);
    fs::remove_all(out);
  }
  // The old checkpoint up to the rename of the commit marker, the new one from there on.
  REQUIRE(commit_point > 1);
  for (size_t i = 0; i < recovered_steps.size(); ++i) {
    INFO("crash point " << i + 1);
    CHECK(recovered_steps[i] == (int64_t(i + 1) < commit_point ? 2 : 4));
  }
}

TEST_CASE("a first save killed at any crash point leaves no checkpoint or a complete one", "[train][crash]") {
  const std::string train = program("LATENT_TRAIN");
  const TempDir dir, io;
  const std::string corpus = write_corpus(dir), at2 = dir / "at2";
  run_ok(train, tiny_args(corpus, at2, 2, 2), io);
  int64_t last_uncommitted = 0;
  for (int64_t point = 1;; ++point) {
    INFO("crash point " << point);
    const std::string out = dir / ("crash" + std::to_string(point));
    const Process p = start(train, tiny_args(corpus, out, 4, 2), io, "1:" + std::to_string(point));
    const int status = p.wait();
    INFO(p.err());
    if (WIFEXITED(status)) {
      REQUIRE(WEXITSTATUS(status) == 0);
      break;
    }
    REQUIRE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
    if (train::is_checkpoint(out)) {
      require_same_checkpoint(out, at2);
    } else {
      // Nothing was committed: recovery leaves an empty directory, which --resume refuses by name.
      REQUIRE(fs::is_empty(out));
      REQUIRE_THROWS_WITH(train::load_trainer_state(out), Catch::Contains("is not a checkpoint"));
      last_uncommitted = point;
    }
  }
  // The deepest uncommitted state (every file staged) does not stop a new run in that directory.
  REQUIRE(last_uncommitted > 20);
  const std::string out = dir / "again";
  const Process crashed = start(train, tiny_args(corpus, out, 2, 2), io, "1:" + std::to_string(last_uncommitted));
  REQUIRE(WIFSIGNALED(crashed.wait()));
  REQUIRE(fs::exists(fs::path(out) / ".staging" / "trainer_state.json"));
  run_ok(train, tiny_args(corpus, out, 2, 2), io);
  require_same_checkpoint(out, at2);
}

TEST_CASE("kill -9 at random moments: every kill leaves a checkpoint that loads, and the resumed chain ends "
          "bitwise on the uninterrupted weights", "[train][crash]") {
  const std::string train = program("LATENT_TRAIN");
  const TempDir dir, io;
  const std::string corpus = write_corpus(dir), reference = dir / "reference", out = dir / "run";
  constexpr int64_t kSteps = 60;
  run_ok(train, tiny_args(corpus, reference, kSteps, 0), io);  // how often a run saves does not change its weights

  // Every run of the chain saves after every step (--save-every is a property of the run, not of the
  // checkpoint, so a resumed run is given it again): a save takes most of a step's time, so most
  // kills land inside one. The seed fixes the delays; where each kill lands depends on the machine,
  // so every check below holds wherever it lands.
  std::mt19937 rng(20240607);
  std::uniform_int_distribution<int> delay_ms(30, 500);
  int64_t last_step = 0, kills = 0, kills_during_save = 0;
  for (int round = 0; round < 8 && last_step < kSteps; ++round) {  // a kill after the last save ends the chain
    const bool resume = train::is_checkpoint(out);
    const Process p = start(
        train, resume ? std::vector<std::string>{"--resume", out, "--save-every", "1"} : tiny_args(corpus, out, kSteps, 1), io);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ::kill(p.pid, SIGKILL);
    const int status = p.wait();
    INFO("round " << round << ": " << p.err());
    if (WIFEXITED(status)) {  // the run finished before its kill
      REQUIRE(WEXITSTATUS(status) == 0);
      break;
    }
    ++kills;
    if (fs::exists(fs::path(out) / ".staging")) ++kills_during_save;
    if (!train::is_checkpoint(out)) {  // killed before its first save committed
      REQUIRE(last_step == 0);
      continue;
    }
    const train::TrainerState state = train::load_trainer_state(out);
    REQUIRE(state.step >= last_step);  // a completed save is never lost
    REQUIRE(state.step <= kSteps);
    last_step = state.step;
    REQUIRE(models::DeepSeekV3::from_pretrained(out)->config().hidden_size == 64);
    const auto optimizer_state = io::load_safetensors(out + "/optimizer.safetensors");
    REQUIRE(optimizer_state.count("state.0.step") == 1);
    REQUIRE(optimizer_state.at("state.0.step").item() == double(state.step));  // one save, not a mix of two
  }
  WARN(kills << " kills, " << kills_during_save << " inside a save; the chain reached step " << last_step);
  if (!train::is_checkpoint(out) || train::load_trainer_state(out).step < kSteps)
    run_ok(train, train::is_checkpoint(out) ? std::vector<std::string>{"--resume", out} : tiny_args(corpus, out, kSteps, 0), io);
  REQUIRE(train::load_trainer_state(out).step == kSteps);
  REQUIRE(read_file(out + "/model.safetensors") == read_file(reference + "/model.safetensors"));
  REQUIRE(read_file(out + "/optimizer.safetensors") == read_file(reference + "/optimizer.safetensors"));
}

TEST_CASE("a malformed LATENT_FAULT_INJECT is refused at the first save, naming the expected form", "[train][crash]") {
  const std::string train = program("LATENT_TRAIN");
  const TempDir dir, io;
  const std::string corpus = write_corpus(dir);
  for (const char* spec : {"7", "2:", "0:3", "x:1", "1:2:3"}) {
    INFO(spec);
    const Process p = start(train, tiny_args(corpus, dir / "run", 2, 2), io, spec);
    const int status = p.wait();
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
    CHECK(p.err().find(std::string("LATENT_FAULT_INJECT: expected <save>:<point> with positive integers, got '") + spec +
                       "'") != std::string::npos);
    CHECK(!train::is_checkpoint(dir / "run"));
  }
}

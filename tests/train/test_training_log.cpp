// TrainingLog: the CSV it writes (fixed leading columns, empty cells for missing values), reading it
// back for a resumed run, and the refusals that keep a resumed log consistent.
#include <filesystem>
#include <fstream>

#include "../helpers.hpp"

using namespace latent;
namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}


}  // namespace

TEST_CASE("TrainingLog writes one row per step with empty cells for missing values", "[train][log]") {
  const testing::TempDir dir;
  train::TrainingLog log({"grad_norm"});
  CHECK(log.columns() == std::vector<std::string>{"step", "loss", "val_loss", "lr", "tokens_per_s", "grad_norm"});
  log.add(1, {{"loss", 5.5}, {"lr", 0.001}, {"grad_norm", 2.25}});
  log.add(2, {{"loss", 4.25}, {"val_loss", 4.5}, {"lr", 0.002}, {"tokens_per_s", 1000}});
  const fs::path path = dir.path / "metrics.csv";
  log.write_csv(path.string());
  CHECK(read_file(path) ==
        "step,loss,val_loss,lr,tokens_per_s,grad_norm\n"
        "1,5.5,,0.001,,2.25\n"
        "2,4.25,4.5,0.002,1000,\n");
  CHECK_THROWS_WITH(log.add(3, {{"los", 1.0}}), "TrainingLog: unknown column 'los'");
}

TEST_CASE("TrainingLog reads its CSV back up to the resumed step and continues it", "[train][log]") {
  const testing::TempDir dir;
  const fs::path path = dir.path / "metrics.csv";
  train::TrainingLog written({"grad_norm"});
  for (int64_t step = 1; step <= 4; ++step) written.add(step, {{"loss", 6.0 - double(step)}, {"grad_norm", 0.5}});
  written.write_csv(path.string());

  train::TrainingLog resumed({"grad_norm"});
  resumed.load_csv(path.string(), 2);  // the checkpoint was at step 2: later rows belong to a lost future
  CHECK(resumed.rows() == 2);
  resumed.add(3, {{"loss", 2.5}});
  resumed.write_csv((dir.path / "again.csv").string());
  CHECK(read_file(dir.path / "again.csv") ==
        "step,loss,val_loss,lr,tokens_per_s,grad_norm\n"
        "1,5,,,,0.5\n"
        "2,4,,,,0.5\n"
        "3,2.5,,,,\n");

  train::TrainingLog fresh({"grad_norm"});
  fresh.load_csv((dir.path / "absent.csv").string(), 10);  // a checkpoint saved before any logged step
  CHECK(fresh.rows() == 0);

  train::TrainingLog other({"balance"});
  CHECK_THROWS_WITH(other.load_csv(path.string(), 4), Catch::Contains("that this run does not write"));
  std::ofstream(dir.path / "bad.csv") << "step,loss,val_loss,lr,tokens_per_s,grad_norm\n1,abc,,,,\n";
  CHECK_THROWS_WITH(resumed.load_csv((dir.path / "bad.csv").string(), 4), Catch::Contains("bad number 'abc'"));
}

TEST_CASE("loss.svg is written even before any evaluation", "[train][log]") {
  const testing::TempDir dir;
  train::TrainingLog log;
  log.write_svg((dir.path / "empty.svg").string());  // no rows yet: axes only
  log.add(1, {{"loss", 5.0}});
  log.write_svg((dir.path / "one.svg").string());
  const std::string svg = read_file(dir.path / "one.svg");
  CHECK(svg.rfind("<svg ", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(svg.find("train loss") != std::string::npos);
  CHECK(svg.find("validation loss") == std::string::npos);  // no series without points
}

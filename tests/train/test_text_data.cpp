// Byte corpus and batch sampler: which files a directory contributes, the validation split, sampler
// windows against the text, and that the sampler's two-integer state resumes the same draws.
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "../helpers.hpp"

using namespace latent;
namespace fs = std::filesystem;

namespace {

std::string text_of(const std::vector<int64_t>& bytes) { return std::string(bytes.begin(), bytes.end()); }

}  // namespace

TEST_CASE("TextCorpus joins files with a newline and holds out the tail", "[train][data]") {
  const testing::TempDir dir;
  const std::string a = dir.write("a.txt", "0123456789"), b = dir.write("b.txt", "abcdefghi");
  const train::TextCorpus corpus({a, b}, 0.1);
  // 10 + 1 + 9 = 20 bytes; floor(20 * 0.1) = 2 held out.
  CHECK(corpus.size() == 20);
  CHECK(text_of(corpus.train()) == "0123456789\nabcdefg");
  CHECK(text_of(corpus.validation()) == "hi");
  CHECK(corpus.files() == std::vector<std::string>{a, b});
}

TEST_CASE("a directory contributes its files in name order, each file once", "[train][data]") {
  const testing::TempDir dir;
  fs::create_directories(dir.path / "texts" / "nested");
  dir.write("texts/b", "bbbbbbbbbb");
  dir.write("texts/a", "aaaaaaaaaa");
  dir.write("texts/.hidden", "hhhhhhhhhh");
  dir.write("texts/empty", "");
  dir.write("texts/nested/c", "cccccccccc");
  fs::create_symlink("a", dir.path / "texts" / "z-link-to-a");  // like GPL -> GPL-3
  const train::TextCorpus corpus({(dir.path / "texts").string()}, 0.1);
  CHECK(corpus.files() == std::vector<std::string>{(dir.path / "texts" / "a").string(), (dir.path / "texts" / "b").string()});
  CHECK(text_of(corpus.train()) + text_of(corpus.validation()) == "aaaaaaaaaa\nbbbbbbbbbb");
}

TEST_CASE("TextCorpus refuses what cannot be text, naming the path", "[train][data]") {
  const testing::TempDir dir;
  const std::string empty = dir.write("empty.txt", ""), tiny = dir.write("tiny.txt", "abc");
  fs::create_directories(dir.path / "only-empty");
  dir.write("only-empty/x", "");
  const std::string missing = (dir.path / "missing.txt").string();
  CHECK_THROWS_WITH(train::TextCorpus({missing}), "data: '" + missing + "' does not exist");
  CHECK_THROWS_WITH(train::TextCorpus({empty}), "data: '" + empty + "' is empty");
  const std::string too_long = (dir.path / std::string(300, 'x')).string();  // beyond NAME_MAX: ENAMETOOLONG
  CHECK_THROWS_WITH(train::TextCorpus({too_long}), Catch::Contains("cannot be looked up: File name too long"));
  CHECK_THROWS_WITH(train::TextCorpus({(dir.path / "only-empty").string()}), Catch::Contains("holds no non-empty files"));
  CHECK_THROWS_WITH(train::TextCorpus({tiny}), Catch::Contains("holds 3 bytes, too few to split off validation"));
  CHECK_THROWS_AS(train::TextCorpus(std::vector<std::string>{}), Error);
}

TEST_CASE("BatchSampler draws windows of the text and resumes from its state", "[train][data]") {
  std::string text;
  for (int i = 0; i < 300; ++i) text += char('a' + i % 26);
  const train::TextCorpus corpus = train::TextCorpus::from_text(text, 0.1);
  train::BatchSampler sampler(corpus.train(), 3, 8, 42);

  const Tensor first = sampler.next();
  REQUIRE(first.shape() == Shape{3, 9});
  const std::vector<int64_t> ids = first.to_vector<int64_t>();
  for (int64_t row = 0; row < 3; ++row)  // each row is a contiguous window: consecutive letters
    for (int64_t t = 1; t < 9; ++t)
      CHECK((ids[size_t(row * 9 + t)] - 'a') == (ids[size_t(row * 9 + t - 1)] - 'a' + 1) % 26);

  const uint64_t seed = sampler.seed(), offset = sampler.offset();
  const std::vector<int64_t> second = sampler.next().to_vector<int64_t>();
  train::BatchSampler resumed(corpus.train(), 3, 8, 0);
  resumed.set_state(seed, offset);
  CHECK(resumed.next().to_vector<int64_t>() == second);
  CHECK(train::BatchSampler(corpus.train(), 3, 8, 42).next().to_vector<int64_t>() == ids);  // seeded
  CHECK(train::BatchSampler(corpus.train(), 3, 8, 43).next().to_vector<int64_t>() != ids);

  CHECK_THROWS_WITH(train::BatchSampler(corpus.train(), 0, 8, 1), Catch::Contains("must be positive"));
  CHECK_THROWS_WITH(train::BatchSampler(corpus.validation(), 1, 30, 1), Catch::Contains("cannot fill a window of 31"));
}

TEST_CASE("BatchSampler::sequential covers the text in order, for evaluation", "[train][data]") {
  std::vector<int64_t> tokens(41);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int64_t(i);
  const train::BatchSampler sampler(tokens, 2, 10, 0);
  const std::vector<Tensor> batches = sampler.sequential(8);
  // 40 targets make 4 windows of 10: two batches of 2; window w starts at 10 w.
  REQUIRE(batches.size() == 2);
  for (size_t b = 0; b < 2; ++b) {
    const std::vector<int64_t> ids = batches[b].to_vector<int64_t>();
    for (int64_t row = 0; row < 2; ++row)
      for (int64_t t = 0; t < 11; ++t) CHECK(ids[size_t(row * 11 + t)] == int64_t(b) * 20 + row * 10 + t);
  }
  CHECK(sampler.sequential(1).size() == 1);
}

TEST_CASE("BatchSampler owns its tokens: a sampler of a temporary corpus draws from live text", "[train][data]") {
  std::string text;
  for (int i = 0; i < 4000; ++i) text += char('a' + i % 26);
  // The corpus is destroyed at the end of this statement; a sampler that kept a pointer to its bytes
  // would read freed memory (ASan: heap-use-after-free in next()).
  train::BatchSampler sampler(train::TextCorpus::from_text(text, 0.1).train(), 4, 16, 42);
  // Reuse the freed heap with other values, so reading it without ASan would also draw wrong windows.
  const std::vector<std::vector<int64_t>> clobber(16, std::vector<int64_t>(3600, -7));
  for (int draw = 0; draw < 3; ++draw) {
    const std::vector<int64_t> ids = sampler.next().to_vector<int64_t>();
    REQUIRE(ids.size() == 4 * 17);
    for (size_t i = 0; i < ids.size(); ++i) {
      REQUIRE(ids[i] >= 'a');
      REQUIRE(ids[i] <= 'z');
      if (i % 17 != 0) REQUIRE((ids[i] - 'a') == (ids[i - 1] - 'a' + 1) % 26);  // a window of the text
    }
  }

  // The shared form keeps the corpus's own tokens alive without a copy.
  std::weak_ptr<const std::vector<int64_t>> tokens;
  std::optional<train::BatchSampler> shared;
  {
    const train::TextCorpus corpus = train::TextCorpus::from_text(text, 0.1);
    tokens = corpus.shared_train();
    shared.emplace(corpus.shared_train(), 2, 8, 1);
  }
  REQUIRE(!tokens.expired());
  CHECK(shared->next().shape() == Shape{2, 9});
  shared.reset();
  CHECK(tokens.expired());
  CHECK_THROWS_WITH(train::BatchSampler(std::shared_ptr<const std::vector<int64_t>>(), 1, 4, 0),
                    Catch::Contains("no tokens"));
}

// BPE training: a hand-computed two-merge case, then on real text: the vocabulary size asked for,
// determinism at 1 and 2 threads, round trips, and reloading the saved tokenizer.json.
#include <filesystem>

#include "../programs.hpp"
#include "fixtures.hpp"

using namespace latent;
using namespace latent::testing;
using tokenizer::Tokenizer;

namespace {

std::vector<std::string> corpus() {
  std::vector<std::string> texts;
  for (const char* name : {"deepseek_v3", "gpt2"})
    for (const GoldenCase& c : golden_cases(name)) texts.push_back(c.bytes);
  return texts;
}

}  // namespace

TEST_CASE("train_bpe on 'aaab aab': merges (a, a) then the smallest tied pair (Ġ, aa)", "[tokenizer][train]") {
  // GPT-2 pieces "aaab" and " aab"; pair counts aa 3, ab 2, " a" 1. After a+a: (aa, a), (a, b),
  // (" ", aa), (aa, b) all occur once; the tie goes to the smallest ids, (32, 256).
  tokenizer::BpeTrainerOptions options;
  options.vocab_size = 259;
  const auto tok = tokenizer::train_bpe({"aaab aab"}, options);
  CHECK(tok.to_json()["model"]["merges"] == nlohmann::json({"a a", "Ġ aa"}));
  CHECK(tok.vocab_size() == 259);
  CHECK(tok.token_to_id("<|endoftext|>") == 258);
  CHECK(tok.encode("aaab aab<|endoftext|>") == std::vector<int64_t>{256, 'a', 'b', 257, 'b', 258});
}

TEST_CASE("train_bpe: vocabulary size, determinism, round trip, reload", "[tokenizer][train]") {
  const std::vector<std::string> texts = corpus();
  tokenizer::BpeTrainerOptions options;
  options.vocab_size = 600;
  options.special_tokens = {"<|endoftext|>", "<|pad|>"};
  set_num_threads(1);
  const auto tok = tokenizer::train_bpe(texts, options);
  set_num_threads(2);
  const auto again = tokenizer::train_bpe(texts, options);
  set_num_threads(1);
  CHECK(tok.to_json() == again.to_json());

  CHECK(tok.vocab_size() == 600);
  // 342 new tokens; a merge may spell a token an earlier merge made ("ab"+"c", "a"+"bc").
  const size_t merges = tok.to_json()["model"]["merges"].size();
  CHECK(merges >= 600 - 256 - 2);
  CHECK(tok.to_json()["model"]["vocab"].size() == 600 - 2);
  CHECK(tok.token_to_id("<|pad|>") == 599);

  std::string all;
  for (const auto& t : texts) all += t;
  const auto ids = tok.encode(all);
  CHECK(tok.decode(ids) == all);
  CHECK(ids.size() < all.size() / 2);  // the merges compress the text they were learned on

  TempDir dir("latent-bpe");
  tok.save(dir / "tokenizer.json");
  const auto reloaded = Tokenizer::from_file(dir / "tokenizer.json");
  CHECK(reloaded.to_json() == tok.to_json());
  for (const auto& t : texts) CHECK(reloaded.encode(t) == tok.encode(t));
}

TEST_CASE("train_bpe refuses a vocabulary smaller than the bytes and special tokens", "[tokenizer][train]") {
  tokenizer::BpeTrainerOptions options;
  options.vocab_size = 256;
  CHECK_THROWS_WITH(tokenizer::train_bpe({"abc"}, options), "train_bpe: vocab_size 256 is below 256 bytes + 1 special tokens");
  options.vocab_size = 300;
  options.special_tokens = {"<a>", "<a>"};
  CHECK_THROWS_WITH(tokenizer::train_bpe({"abc"}, options), "train_bpe: special token '<a>' given twice");
}

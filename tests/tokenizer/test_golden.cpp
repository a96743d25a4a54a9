// DeepSeek-V3's and GPT-2's own tokenizer.json against transformers.js' ids for the same texts
// (tests/data/tokenizers/make_fixtures.mjs), decoding back to the text, and batch encoding.
#include "fixtures.hpp"

using namespace latent;
using namespace latent::testing;

namespace {

void check_golden(const std::string& name) {
  const auto& tok = real_tokenizer(name);
  for (const GoldenCase& c : golden_cases(name)) {
    INFO(name << " case " << c.name);
    CHECK(tok.encode(c.bytes) == c.ids);
    CHECK(tok.decode(c.ids) == c.bytes);
  }
}

}  // namespace

TEST_CASE("DeepSeek-V3's tokenizer encodes token for token as transformers.js", "[tokenizer][golden]") {
  const auto& tok = real_tokenizer("deepseek_v3");
  CHECK(tok.vocab_size() == 128815);  // ids 0..128814: 128,000 vocabulary entries, 818 added tokens
  CHECK(tok.to_json()["model"]["merges"].size() == 127741);
  CHECK(tok.token_to_id("<｜end▁of▁sentence｜>") == 1);
  check_golden("deepseek_v3");
}

TEST_CASE("GPT-2's tokenizer encodes token for token as transformers.js", "[tokenizer][golden]") {
  const auto& tok = real_tokenizer("gpt2");
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.token_to_id("<|endoftext|>") == 50256);
  CHECK(tok.token_to_id("Ġthe") == 262);
  check_golden("gpt2");
}

TEST_CASE("decode(encode(x)) == x for all the golden texts joined, and any bytes", "[tokenizer]") {
  std::string all;
  for (const GoldenCase& c : golden_cases("gpt2")) all += c.bytes;
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte += char(255 - b);
  for (const char* name : {"deepseek_v3", "gpt2"}) {
    INFO(name);
    const auto& tok = real_tokenizer(name);
    CHECK(tok.decode(tok.encode(all)) == all);
    CHECK(tok.decode(tok.encode(every_byte)) == every_byte);
    CHECK(tok.decode(tok.encode(every_byte + all + every_byte)) == every_byte + all + every_byte);
  }
}

TEST_CASE("encode_batch gives each document's encode() ids, at 1 and 2 threads", "[tokenizer]") {
  const auto& tok = real_tokenizer("deepseek_v3");
  std::vector<std::string> documents;
  for (const GoldenCase& c : golden_cases("deepseek_v3")) documents.push_back(c.bytes);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const auto batch = tok.encode_batch(documents);
    REQUIRE(batch.size() == documents.size());
    for (size_t i = 0; i < documents.size(); ++i) CHECK(batch[i] == tok.encode(documents[i]));
  }
  set_num_threads(1);
}

TEST_CASE("decode refuses ids outside the vocabulary", "[tokenizer]") {
  const auto& tok = real_tokenizer("gpt2");
  const std::vector<int64_t> too_big{15496, 50257}, negative{-1};
  CHECK_THROWS_WITH(tok.decode(too_big), "decode: id 50257 (position 1) out of range [0, 50257)");
  CHECK_THROWS_WITH(tok.decode(negative), "decode: id -1 (position 0) out of range [0, 50257)");
}

// latent-tokenizer end to end, run as a user runs it: encode and decode through GPT-2's
// tokenizer.json against the golden ids, train then encode with the result, refused inputs.
#include <cstdio>

#include "../programs.hpp"
#include "fixtures.hpp"

using namespace latent;
using namespace latent::testing;

namespace {

struct Run {
  int status;
  std::string out, err;
};

Run run(const TempDir& dir, const std::string& arguments, const std::string& input) {
  {
    std::FILE* file = std::fopen((dir / "stdin").c_str(), "wb");
    std::fwrite(input.data(), 1, input.size(), file);
    std::fclose(file);
  }
  const std::string command = quote(program("LATENT_TOKENIZER")) + " " + arguments + " <" + quote(dir / "stdin") + " >" +
                              quote(dir / "stdout") + " 2>" + quote(dir / "stderr");
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(dir / "stdout"), read_file(dir / "stderr")};
}

std::string ids_line(const std::vector<int64_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  return line + "\n";
}

}  // namespace

TEST_CASE("latent-tokenizer encode / decode print transformers.js' ids and the bytes back", "[tokenizer][program]") {
  TempDir dir("latent-tokenizer-cli");
  {
    std::FILE* file = std::fopen((dir / "gpt2.json").c_str(), "wb");
    const std::string json = gunzip_file(test_data("tokenizers/gpt2.json.gz"));
    std::fwrite(json.data(), 1, json.size(), file);
    std::fclose(file);
  }
  const std::string tok = quote(dir / "gpt2.json");
  for (const GoldenCase& c : golden_cases("gpt2")) {
    INFO(c.name);
    const Run encoded = run(dir, "encode " + tok, c.bytes);
    REQUIRE(encoded.status == 0);
    CHECK(encoded.out == ids_line(c.ids));
    const Run decoded = run(dir, "decode " + tok, encoded.out);
    REQUIRE(decoded.status == 0);
    CHECK(decoded.out == c.bytes);
  }
  const Run bad_id = run(dir, "decode " + tok, "15496 x12\n");
  CHECK(bad_id.status == 1);
  CHECK(bad_id.err == "latent-tokenizer: decode: 'x12' (word 2) is not a token id\n");
  const Run out_of_range = run(dir, "decode " + tok, "15496 50257");
  CHECK(out_of_range.err == "latent-tokenizer: decode: id 50257 (position 1) out of range [0, 50257)\n");
  const Run missing = run(dir, "encode " + quote(dir / "nope.json"), "hi");
  CHECK(missing.status == 1);
  CHECK(missing.err.find("nope.json") != std::string::npos);
}

TEST_CASE("latent-tokenizer train writes a tokenizer.json that encodes and decodes", "[tokenizer][program]") {
  TempDir dir("latent-tokenizer-train");
  std::string text;
  for (const GoldenCase& c : golden_cases("deepseek_v3")) text += c.bytes;
  {
    std::FILE* file = std::fopen((dir / "corpus.txt").c_str(), "wb");
    std::fwrite(text.data(), 1, text.size(), file);
    std::fclose(file);
  }
  const Run trained = run(dir, "train --vocab-size 400 --data " + quote(dir / "corpus.txt") + " --out " + quote(dir / "bpe.json"), "");
  INFO(trained.err);
  REQUIRE(trained.status == 0);
  const auto tok = tokenizer::Tokenizer::from_file(dir / "bpe.json");
  CHECK(tok.vocab_size() == 400);
  const Run encoded = run(dir, "encode " + quote(dir / "bpe.json"), text);
  CHECK(encoded.out == ids_line(tok.encode(text)));
  CHECK(run(dir, "decode " + quote(dir / "bpe.json"), encoded.out).out == text);
  const Run too_small = run(dir, "train --vocab-size 10 --data " + quote(dir / "corpus.txt") + " --out " + quote(dir / "x.json"), "");
  CHECK(too_small.status == 1);
  CHECK(too_small.err == "latent-tokenizer: train_bpe: vocab_size 10 is below 256 bytes + 1 special tokens\n");
}

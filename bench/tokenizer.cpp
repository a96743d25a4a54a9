// Tokenizer throughput: encode and decode MB/s of one text through a tokenizer.json, single thread,
// the best of several rounds; optionally the ids written out for comparison (bench/tokenizer.sh).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <latent/latent.hpp>

int main(int argc, char** argv) {
  CLI::App app{"tokenizer: encode/decode throughput of a tokenizer.json on a text file"};
  std::string tokenizer_path, text_path, ids_path;
  int rounds = 3;
  app.add_option("tokenizer", tokenizer_path, "tokenizer.json")->required();
  app.add_option("text", text_path, "text file")->required();
  app.add_option("--rounds", rounds, "timed rounds (the best is reported)");
  app.add_option("--ids-out", ids_path, "write the ids here, space-separated");
  CLI11_PARSE(app, argc, argv);
  latent::set_num_threads(1);

  using clock = std::chrono::steady_clock;
  const auto seconds = [](clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  std::ifstream in(text_path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto load_start = clock::now();
  const auto tok = latent::tokenizer::Tokenizer::from_file(tokenizer_path);
  const double load = seconds(load_start, clock::now());

  double encode = 1e30, decode = 1e30;
  std::vector<int64_t> ids;
  std::string decoded;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = clock::now();
    ids = tok.encode(text);
    const auto t1 = clock::now();
    decoded = tok.decode(ids);
    const auto t2 = clock::now();
    encode = std::min(encode, seconds(t0, t1));
    decode = std::min(decode, seconds(t1, t2));
  }
  if (decoded != text) std::fprintf(stderr, "tokenizer: decode(encode(text)) differs from the text\n");
  const double mb = double(text.size()) / 1e6;
  fmt::print("load_s: {:.3f}\nbytes: {}\ntokens: {}\nencode_mb_per_s: {:.2f}\ndecode_mb_per_s: {:.2f}\n", load, text.size(),
             ids.size(), mb / encode, mb / decode);
  if (!ids_path.empty()) {
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ' ';
      line += std::to_string(ids[i]);
    }
    std::ofstream(ids_path) << line << '\n';
  }
  return decoded == text ? 0 : 1;
}

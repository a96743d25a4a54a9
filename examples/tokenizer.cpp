// latent-tokenizer: encode stdin to token ids, decode ids back to bytes, or train a byte-level BPE,
// all through a Hugging Face tokenizer.json.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <set>

#include <CLI/CLI.hpp>

#include <latent/latent.hpp>

using namespace latent;
namespace fs = std::filesystem;

namespace {

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

std::string read_file(const fs::path& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text.append(buffer, n);
  const bool failed = std::ferror(file);
  std::fclose(file);
  if (failed) fail("{}: read failed", path.string());
  return text;
}

// The files behind --data: a directory stands for its regular files in name order (not recursive,
// hidden files skipped); a file reached twice (GPL and its symlink GPL-3) is read once.
std::vector<std::string> read_corpus(const std::vector<std::string>& paths) {
  std::vector<std::string> texts;
  std::set<fs::path> seen;
  const auto add = [&](const fs::path& file) {
    if (seen.insert(fs::canonical(file)).second) texts.push_back(read_file(file));
  };
  for (const std::string& path : paths) {
    if (!fs::exists(path)) fail("--data {}: no such file or directory", path);
    if (!fs::is_directory(path)) {
      add(path);
      continue;
    }
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(path))
      if (entry.is_regular_file() && entry.path().filename().string().front() != '.') files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (const auto& file : files) add(file);
  }
  return texts;
}

std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  const char* p = text.data();
  const char* end = p + text.size();
  while (true) {
    while (p < end && std::isspace(static_cast<unsigned char>(*p))) ++p;
    if (p == end) return ids;
    int64_t id = 0;
    const auto [next, error] = std::from_chars(p, end, id);
    if (error != std::errc() || (next < end && !std::isspace(static_cast<unsigned char>(*next)))) {
      const char* word_end = std::find_if(p, end, [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
      fail("decode: '{}' (word {}) is not a token id", std::string(p, std::min<size_t>(word_end - p, 40)),
           ids.size() + 1);
    }
    ids.push_back(id);
    p = next;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"latent-tokenizer: byte-level BPE tokenizers (Hugging Face tokenizer.json)"};
  app.require_subcommand(1);

  std::string tokenizer_path;
  auto* encode = app.add_subcommand("encode", "text on stdin -> token ids on stdout (one line, no special tokens added)");
  encode->add_option("tokenizer", tokenizer_path, "tokenizer.json")->required();
  auto* decode = app.add_subcommand("decode", "token ids on stdin (separated by whitespace) -> the bytes they stand for");
  decode->add_option("tokenizer", tokenizer_path, "tokenizer.json")->required();

  tokenizer::BpeTrainerOptions options;
  std::vector<std::string> data;
  std::string out_path;
  auto* train = app.add_subcommand("train", "learn a byte-level BPE from text files and write its tokenizer.json");
  train->add_option("--vocab-size", options.vocab_size, "ids in all: 256 bytes + merges + special tokens")
      ->default_val(options.vocab_size);
  train->add_option("--data", data, "text files or directories of them")->required();
  train->add_option("--out", out_path, "tokenizer.json to write")->required();
  train->add_option("--special-token", options.special_tokens, "added token kept whole (repeatable)")
      ->default_val(options.special_tokens);

  CLI11_PARSE(app, argc, argv);
  try {
    if (encode->parsed()) {
      const auto tok = tokenizer::Tokenizer::from_file(tokenizer_path);
      const std::vector<int64_t> ids = tok.encode(read_stdin());
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) line += ' ';
        line += std::to_string(ids[i]);
      }
      line += '\n';
      std::fwrite(line.data(), 1, line.size(), stdout);
    } else if (decode->parsed()) {
      const auto tok = tokenizer::Tokenizer::from_file(tokenizer_path);
      const std::string bytes = tok.decode(parse_ids(read_stdin()));
      std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    } else {
      const auto tok = tokenizer::train_bpe(read_corpus(data), options);
      tok.save(out_path);
      std::fprintf(stderr, "%s: %lld ids (%zu merges)\n", out_path.c_str(), static_cast<long long>(tok.vocab_size()),
                   tok.to_json()["model"]["merges"].size());
    }
    if (std::fflush(stdout) != 0) fail("latent-tokenizer: writing stdout failed");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "latent-tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}

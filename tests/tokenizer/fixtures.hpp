// The tokenizer tests' fixtures: the real tokenizer.json files (gzipped in tests/data/tokenizers)
// loaded once per process, their golden cases, and small hand-written tokenizer.json configurations.
#pragma once
#include <zlib.h>

#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include <latent/latent.hpp>

#include "../helpers.hpp"

namespace latent::testing {

inline std::string gunzip_file(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) FAIL("cannot open " << path);
  std::string out;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0) out.append(buffer, size_t(n));
  gzclose(file);
  REQUIRE(n == 0);
  return out;
}

// "deepseek_v3" or "gpt2", loaded from tests/data/tokenizers/<name>.json.gz.
inline const tokenizer::Tokenizer& real_tokenizer(const std::string& name) {
  static std::map<std::string, tokenizer::Tokenizer> loaded;
  auto it = loaded.find(name);
  if (it == loaded.end()) {
    const std::string path = test_data("tokenizers/" + name + ".json.gz");
    it = loaded.emplace(name, tokenizer::Tokenizer::from_json_string(gunzip_file(path), path)).first;
  }
  return it->second;
}

struct GoldenCase {
  std::string name, bytes;
  std::vector<int64_t> ids;
};

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// tests/data/tokenizers/golden_<name>.json, written by make_fixtures.mjs (transformers.js' ids).
inline std::vector<GoldenCase> golden_cases(const std::string& name) {
  const auto json = io::read_json_file(test_data("tokenizers/golden_" + name + ".json"));
  std::vector<GoldenCase> out;
  for (const auto& c : json.at("cases"))
    out.push_back({c.at("name").get<std::string>(),
                   c.contains("hex") ? from_hex(c.at("hex").get<std::string>()) : c.at("text").get<std::string>(),
                   c.at("ids").get<std::vector<int64_t>>()});
  REQUIRE(out.size() > 30);
  return out;
}

// A byte-level BPE tokenizer.json with the 256 byte tokens (ids 0..255 by byte value), then
// `extra` tokens and `merges`, and the given pre_tokenizer and added tokens.
inline nlohmann::json small_config(const std::vector<std::string>& extra, const nlohmann::json& merges,
                                   const nlohmann::json& pre_tokenizer = tokenizer::PreTokenizer::gpt2_json(),
                                   const nlohmann::json& added_tokens = nlohmann::json::array()) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer::byte_level::to_text(std::string(1, char(b)))] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + i;
  return {{"added_tokens", added_tokens},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre_tokenizer},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

}  // namespace latent::testing

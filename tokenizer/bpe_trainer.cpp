// The BPE trainer: word counting, the pair index with its lazily updated max-heap, the merge loop.
#include "bpe_trainer.hpp"

#include <algorithm>
#include <map>
#include <queue>
#include <unordered_map>

#include "../core/error.hpp"
#include "byte_level.hpp"

namespace latent::tokenizer {

namespace {

using Pair = uint64_t;  // left id << 32 | right id
Pair make_pair(int32_t left, int32_t right) { return uint64_t(uint32_t(left)) << 32 | uint32_t(right); }
int32_t left_of(Pair p) { return int32_t(p >> 32); }
int32_t right_of(Pair p) { return int32_t(p & 0xFFFFFFFFu); }

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

// Heap entries may be stale: an entry is current only while its count equals the pair's count.
struct Candidate {
  int64_t count;
  Pair pair;
  bool operator<(const Candidate& o) const { return count != o.count ? count < o.count : pair > o.pair; }
};

nlohmann::json tokenizer_json(const std::vector<std::string>& token_bytes, const std::vector<std::pair<int32_t, int32_t>>& merges,
                              const BpeTrainerOptions& options) {
  nlohmann::json vocab = nlohmann::json::object();
  std::vector<std::string> texts(token_bytes.size());
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    texts[id] = byte_level::to_text(token_bytes[id]);
    vocab[texts[id]] = id;
  }
  nlohmann::json merge_list = nlohmann::json::array();
  for (const auto& [left, right] : merges) merge_list.push_back(texts[size_t(left)] + " " + texts[size_t(right)]);
  nlohmann::json added = nlohmann::json::array();
  for (size_t i = 0; i < options.special_tokens.size(); ++i)
    added.push_back({{"id", token_bytes.size() + i},
                     {"content", options.special_tokens[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", options.pre_tokenizer},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merge_list}}}};
}

}  // namespace

Tokenizer train_bpe(const std::vector<std::string>& texts, const BpeTrainerOptions& options) {
  const int64_t specials = int64_t(options.special_tokens.size());
  if (options.vocab_size < 256 + specials)
    fail("train_bpe: vocab_size {} is below 256 bytes + {} special tokens", options.vocab_size, specials);
  for (size_t i = 0; i < options.special_tokens.size(); ++i) {
    if (options.special_tokens[i].empty()) fail("train_bpe: empty special token");
    for (size_t j = 0; j < i; ++j)
      if (options.special_tokens[i] == options.special_tokens[j])
        fail("train_bpe: special token '{}' given twice", options.special_tokens[i]);
  }

  // The untrained tokenizer (bytes only) cuts the texts exactly as the trained one will.
  std::vector<std::string> token_bytes(256);
  for (int b = 0; b < 256; ++b) token_bytes[size_t(b)] = std::string(1, char(b));
  const Tokenizer cutter = Tokenizer::from_json(tokenizer_json(token_bytes, {}, options), "train_bpe");

  // Distinct pieces with their counts, in byte order so that word indices do not depend on hashing.
  std::map<std::string, int64_t> counts;
  {
    std::unordered_map<std::string_view, int64_t> seen;
    std::vector<Piece> pieces;
    std::deque<std::string> storage;
    for (const std::string& text : texts) {
      pieces.clear();
      cutter.pre_tokenize(text, pieces, storage);
      for (const Piece& piece : pieces)
        if (piece.added_id < 0 && piece.bytes.size() > 1) ++seen[piece.bytes];
    }
    for (const auto& [bytes, count] : seen) counts.emplace(std::string(bytes), count);
  }
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [bytes, count] : counts) {
    Word word{{}, count};
    for (unsigned char b : bytes) word.symbols.push_back(b);
    words.push_back(std::move(word));
  }

  std::unordered_map<Pair, int64_t> pair_counts;
  std::unordered_map<Pair, std::vector<int32_t>> words_with_pair;  // may list a word that lost the pair
  for (size_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const Pair p = make_pair(s[i], s[i + 1]);
      pair_counts[p] += words[w].count;
      auto& list = words_with_pair[p];
      if (list.empty() || list.back() != int32_t(w)) list.push_back(int32_t(w));
    }
  }
  std::priority_queue<Candidate> heap;
  for (const auto& [pair, count] : pair_counts) heap.push({count, pair});

  std::map<std::string, int32_t> ids_by_bytes;
  for (int b = 0; b < 256; ++b) ids_by_bytes.emplace(token_bytes[size_t(b)], b);
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::vector<int64_t> merged_in(words.size(), -1);  // the merge step that last rewrote each word
  std::unordered_map<Pair, int64_t> delta;
  const size_t target = size_t(options.vocab_size - specials);

  while (token_bytes.size() < target && !heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    const auto current = pair_counts.find(top.pair);
    if (current == pair_counts.end() || current->second != top.count || top.count <= 0) continue;
    const int32_t left = left_of(top.pair), right = right_of(top.pair);

    // Two merges can spell the same bytes ("ab"+"c", "a"+"bc"): they share one token, as in Hugging Face.
    const std::string bytes = token_bytes[size_t(left)] + token_bytes[size_t(right)];
    auto [it, fresh] = ids_by_bytes.emplace(bytes, int32_t(token_bytes.size()));
    if (fresh) token_bytes.push_back(bytes);
    const int32_t merged = it->second;
    merges.emplace_back(left, right);
    const auto step = int64_t(merges.size());

    delta.clear();
    for (const int32_t w : words_with_pair[top.pair]) {
      if (merged_in[size_t(w)] == step) continue;
      merged_in[size_t(w)] = step;
      Word& word = words[size_t(w)];
      auto& s = word.symbols;
      std::vector<int32_t> rewritten;
      rewritten.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == left && s[i + 1] == right) {
          rewritten.push_back(merged);
          ++i;
        } else {
          rewritten.push_back(s[i]);
        }
      }
      if (rewritten.size() == s.size()) continue;  // listed, but lost the pair to an earlier merge
      for (size_t i = 0; i + 1 < s.size(); ++i) delta[make_pair(s[i], s[i + 1])] -= word.count;
      for (size_t i = 0; i + 1 < rewritten.size(); ++i) {
        const Pair p = make_pair(rewritten[i], rewritten[i + 1]);
        delta[p] += word.count;
        if (rewritten[i] == merged || rewritten[i + 1] == merged) {
          auto& list = words_with_pair[p];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
      s = std::move(rewritten);
    }
    words_with_pair.erase(top.pair);
    for (const auto& [pair, change] : delta) {
      if (change == 0) continue;
      const int64_t count = (pair_counts[pair] += change);
      if (count > 0) heap.push({count, pair});
    }
  }
  return Tokenizer::from_json(tokenizer_json(token_bytes, merges, options), "train_bpe");
}

}  // namespace latent::tokenizer

// The BPE model of a byte-level tokenizer.json: vocabulary, ranked merges, and the encoding of one
// pre-tokenized piece into token ids (the lowest-ranked adjacent pair merged first, leftmost on ties).
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace latent::tokenizer {

class BpeModel {
 public:
  // From tokenizer.json's "model" (type BPE; merges as "a b" strings or [a, b] pairs). Refused with
  // latent::Error naming `context`: another model type, dropout, subword prefixes or suffixes,
  // byte fallback, a vocabulary lacking one of the 256 byte characters, two tokens with one id, an
  // id out of range, a merge naming a token (or producing one) that is not in the vocabulary.
  static BpeModel from_json(const nlohmann::json& model, const std::string& context);

  // Appends the ids of `bytes` (one piece, raw bytes) to `out`.
  void encode(std::string_view bytes, std::vector<int32_t>& out) const;

  // Token text (byte-level alphabet) by id; empty where the vocabulary has no such id.
  const std::vector<std::string>& tokens() const { return tokens_; }

 private:
  struct MergeSlot {
    uint64_t pair = ~uint64_t(0);  // left id << 32 | right id; all ones: empty slot
    int32_t rank = 0, id = 0;      // merge rank, id of the merged token
  };
  static uint64_t pair_key(int32_t left, int32_t right) { return uint64_t(uint32_t(left)) << 32 | uint32_t(right); }
  const MergeSlot* find_merge(int32_t left, int32_t right) const;
  void add_merge(int32_t left, int32_t right, int32_t rank, int32_t id);
  void merge_short(std::vector<int32_t>& symbols) const;
  void merge_long(std::vector<int32_t>& symbols) const;

  std::vector<std::string> tokens_;
  std::array<int32_t, 256> byte_ids_{};
  std::vector<MergeSlot> merges_;  // open addressing, power-of-two size, linear probing
  uint64_t merge_mask_ = 0;
  bool ignore_merges_ = false;     // a piece that is itself a token is that token (Llama-3 style)
  std::unordered_map<std::string, int32_t> ids_by_bytes_;  // only with ignore_merges_
};

}  // namespace latent::tokenizer

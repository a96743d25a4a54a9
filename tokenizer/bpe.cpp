// Loading and checking the BPE vocabulary and merges; the merge loop for short and long pieces.
#include "bpe.hpp"

#include <algorithm>
#include <climits>
#include <queue>

#include "../core/error.hpp"
#include "../io/json.hpp"
#include "byte_level.hpp"

namespace latent::tokenizer {

namespace {

std::string shown(std::string_view token) { return io::describe_json_value(nlohmann::json(std::string(token))); }

// Pieces shorter than this are merged by rescanning a rank array (no allocation, cache-friendly);
// longer ones (runs of CJK, digits or spaces) through a heap, so a megabyte piece is not quadratic.
constexpr size_t kShortPiece = 64;

}  // namespace

BpeModel BpeModel::from_json(const nlohmann::json& model, const std::string& context) {
  const std::string where = context + " model";
  const auto type = io::required<std::string>(model, "type", where);
  if (type != "BPE") fail("{}: model type '{}' is not supported (only BPE)", where, type);
  const auto dropout = io::optional<double>(model, "dropout", 0.0, where);
  if (dropout != 0.0) fail("{}: dropout {} is not supported (encoding must be deterministic)", where, dropout);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!io::optional<std::string>(model, key, "", where).empty())
      fail("{}: {} is not supported by byte-level BPE", where, key);
  if (io::optional<bool>(model, "byte_fallback", false, where))
    fail("{}: byte_fallback is not supported (byte-level BPE has every byte already)", where);

  BpeModel out;
  out.ignore_merges_ = io::optional<bool>(model, "ignore_merges", false, where);

  // Vocabulary: ids dense enough that a table indexed by id stays proportional to the file.
  const auto& vocab = io::required<nlohmann::json>(model, "vocab", where);
  if (!vocab.is_object()) fail("{}: 'vocab' must be an object, got {}", where, io::describe_json_value(vocab));
  const int64_t id_limit = 4 * int64_t(vocab.size()) + 1024;
  std::unordered_map<std::string, int32_t> ids;
  ids.reserve(vocab.size());
  for (const auto& [token, value] : vocab.items()) {
    const auto id = io::json_as<int64_t>(value, "vocab entry " + shown(token), where);
    if (id < 0 || id >= id_limit)
      fail("{}: id {} of token {} out of range [0, {})", where, id, shown(token), id_limit);
    if (size_t(id) >= out.tokens_.size()) out.tokens_.resize(size_t(id) + 1);
    if (!out.tokens_[size_t(id)].empty())
      fail("{}: id {} given to both {} and {}", where, id, shown(out.tokens_[size_t(id)]), shown(token));
    if (token.empty()) fail("{}: empty token with id {}", where, id);
    out.tokens_[size_t(id)] = token;
    ids.emplace(token, int32_t(id));
  }
  for (int b = 0; b < 256; ++b) {
    std::string text;
    byte_level::append_utf8(byte_level::char_of_byte(uint8_t(b)), text);
    const auto it = ids.find(text);
    if (it == ids.end())
      fail("{}: vocabulary lacks byte 0x{:02X} (byte-level token {})", where, b, shown(text));
    out.byte_ids_[size_t(b)] = it->second;
  }

  const auto& merges = io::required<nlohmann::json>(model, "merges", where);
  if (!merges.is_array()) fail("{}: 'merges' must be an array, got {}", where, io::describe_json_value(merges));
  if (merges.size() >= size_t(INT32_MAX)) fail("{}: too many merges ({})", where, merges.size());
  size_t slots = 16;
  while (slots < 2 * merges.size()) slots *= 2;
  out.merges_.assign(slots, MergeSlot{});
  out.merge_mask_ = slots - 1;
  const auto id_of = [&](const std::string& token, size_t rank, const char* role) {
    const auto it = ids.find(token);
    if (it == ids.end())
      fail("{}: merge {} names {} ({}), which is not in the vocabulary", where, rank, shown(token), role);
    return it->second;
  };
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const nlohmann::json& merge = merges[rank];
    std::string left, right;
    if (merge.is_string()) {
      const auto& line = merge.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        fail("{}: merge {} {} is not two tokens separated by one space", where, rank, shown(line));
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail("{}: merge {} must be \"a b\" or [\"a\", \"b\"], got {}", where, rank, io::describe_json_value(merge));
    }
    const int32_t left_id = id_of(left, rank, "left"), right_id = id_of(right, rank, "right");
    const int32_t merged_id = id_of(left + right, rank, "their concatenation");
    out.add_merge(left_id, right_id, int32_t(rank), merged_id);
  }
  if (out.ignore_merges_)
    for (size_t id = 0; id < out.tokens_.size(); ++id)
      if (auto bytes = byte_level::to_bytes(out.tokens_[id])) out.ids_by_bytes_.emplace(std::move(*bytes), int32_t(id));
  return out;
}

// A repeated pair keeps its last rank, as Hugging Face's and transformers.js' rank maps do.
void BpeModel::add_merge(int32_t left, int32_t right, int32_t rank, int32_t id) {
  const uint64_t key = pair_key(left, right);
  for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20 & merge_mask_;; i = (i + 1) & merge_mask_) {
    MergeSlot& slot = merges_[i];
    if (slot.pair == key || slot.pair == ~uint64_t(0)) {
      slot = {key, rank, id};
      return;
    }
  }
}

const BpeModel::MergeSlot* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20 & merge_mask_;; i = (i + 1) & merge_mask_) {
    const MergeSlot& slot = merges_[i];
    if (slot.pair == key) return &slot;
    if (slot.pair == ~uint64_t(0)) return nullptr;
  }
}

void BpeModel::encode(std::string_view bytes, std::vector<int32_t>& out) const {
  if (bytes.empty()) return;
  if (ignore_merges_) {
    const auto it = ids_by_bytes_.find(std::string(bytes));
    if (it != ids_by_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  thread_local std::vector<int32_t> symbols;
  symbols.resize(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) symbols[i] = byte_ids_[static_cast<unsigned char>(bytes[i])];
  if (symbols.size() < kShortPiece)
    merge_short(symbols);
  else
    merge_long(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

// ranks[i] is the rank of the pair (symbols[i], symbols[i+1]), INT_MAX when it is no merge.
void BpeModel::merge_short(std::vector<int32_t>& symbols) const {
  int32_t ranks[kShortPiece], merged[kShortPiece];
  size_t n = symbols.size();
  const auto look_up = [&](size_t i) {
    const MergeSlot* slot = find_merge(symbols[i], symbols[i + 1]);
    ranks[i] = slot ? slot->rank : INT_MAX;
    merged[i] = slot ? slot->id : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) look_up(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == INT_MAX) break;
    symbols[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) symbols[i] = symbols[i + 1];
    for (size_t i = best + 1; i + 2 < n; ++i) {
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best + 1 < n) look_up(best);
    if (best > 0) look_up(best - 1);
  }
  symbols.resize(n);
}

// The same order of merges through a min-heap of (rank, position) over a linked list of symbols.
// An entry is stale once either symbol has changed; positions are original byte offsets, so the
// leftmost of equal ranks wins, as in the quadratic loop.
void BpeModel::merge_long(std::vector<int32_t>& symbols) const {
  struct Entry {
    int32_t rank, position, left, right;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : position > o.position; }
  };
  const auto n = int32_t(symbols.size());
  std::vector<int32_t> next(static_cast<size_t>(n)), previous(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
    previous[size_t(i)] = i - 1;
  }
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  const auto push = [&](int32_t i) {
    const int32_t j = next[size_t(i)];
    if (j < 0) return;
    if (const MergeSlot* slot = find_merge(symbols[size_t(i)], symbols[size_t(j)]))
      heap.push({slot->rank, i, symbols[size_t(i)], symbols[size_t(j)]});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Entry e = heap.top();
    heap.pop();
    const int32_t i = e.position, j = next[size_t(i)];
    if (symbols[size_t(i)] != e.left || j < 0 || symbols[size_t(j)] != e.right) continue;
    symbols[size_t(i)] = find_merge(e.left, e.right)->id;
    symbols[size_t(j)] = -1;
    next[size_t(i)] = next[size_t(j)];
    if (next[size_t(j)] >= 0) previous[size_t(next[size_t(j)])] = i;
    if (previous[size_t(i)] >= 0) push(previous[size_t(i)]);
    push(i);
  }
  symbols.erase(std::remove(symbols.begin(), symbols.end(), -1), symbols.end());
}

}  // namespace latent::tokenizer

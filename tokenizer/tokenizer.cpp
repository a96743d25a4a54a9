// Loading a tokenizer.json into its parts (added tokens, pre-tokenizer, BPE model, decode table),
// and the encode / decode loops over them.
#include "tokenizer.hpp"

#include <unordered_map>

#include <fmt/format.h>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../io/atomic_file.hpp"
#include "../io/json.hpp"
#include "added_tokens.hpp"
#include "bpe.hpp"
#include "byte_level.hpp"
#include "pre_tokenizer.hpp"

namespace latent::tokenizer {

struct Tokenizer::Impl {
  nlohmann::json config;
  BpeModel model;
  PreTokenizer pre_tokenizer;
  AddedTokens added;
  // Decoded bytes of id i: decoded[offsets[i], offsets[i+1]); an empty range means no token.
  std::string decoded;
  std::vector<size_t> offsets;
};

namespace {

std::string shown(std::string_view text) { return io::describe_json_value(nlohmann::json(std::string(text))); }

const nlohmann::json& member(const nlohmann::json& config, const char* key) {
  static const nlohmann::json null;
  const auto it = config.find(key);
  return it == config.end() ? null : *it;
}

void check_normalizer(const nlohmann::json& normalizer, const std::string& source) {
  if (normalizer.is_null()) return;
  const std::string where = source + " normalizer";
  const auto type = io::required<std::string>(normalizer, "type", where);
  const auto& steps = member(normalizer, "normalizers");
  if (type == "Sequence" && steps.is_array() && steps.empty()) return;
  fail("{}: '{}' is not supported (only null or an empty Sequence)", where,
       type == "Sequence" ? steps.dump().substr(0, 80) : type);
}

void check_decoder(const nlohmann::json& decoder, const std::string& source) {
  const std::string where = source + " decoder";
  if (decoder.is_null()) fail("{}: null is not supported (byte-level BPE needs the ByteLevel decoder)", where);
  const auto type = io::required<std::string>(decoder, "type", where);
  if (type != "ByteLevel") fail("{}: '{}' is not supported (only ByteLevel)", where, type);
}

struct AddedToken {
  std::string content;
  int64_t id;
};

std::vector<AddedToken> read_added_tokens(const nlohmann::json& list, int64_t id_limit, const std::string& source) {
  const std::string where = source + " added_tokens";
  std::vector<AddedToken> out;
  if (list.is_null()) return out;
  if (!list.is_array()) fail("{}: expected an array, got {}", where, io::describe_json_value(list));
  std::unordered_map<int64_t, std::string> contents_by_id;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string entry = fmt::format("{}[{}]", where, i);
    AddedToken token{io::required<std::string>(list[i], "content", entry), io::required<int64_t>(list[i], "id", entry)};
    if (token.content.empty()) fail("{}: empty content", entry);
    if (io::find_invalid_utf8(token.content)) fail("{}: content is not valid UTF-8", entry);
    if (token.id < 0 || token.id >= id_limit)
      fail("{}: id {} of {} out of range [0, {})", entry, token.id, shown(token.content), id_limit);
    for (const char* flag : {"lstrip", "rstrip", "single_word"})
      if (io::optional<bool>(list[i], flag, false, entry))
        fail("{}: {} of {} is not supported", entry, flag, shown(token.content));
    const auto [it, fresh] = contents_by_id.emplace(token.id, token.content);
    if (!fresh)
      fail("{}: id {} given to both {} and {}", where, token.id, shown(it->second), shown(token.content));
    for (const AddedToken& other : out)
      if (other.content == token.content)
        fail("{}: {} added twice (ids {} and {})", where, shown(token.content), other.id, token.id);
    out.push_back(std::move(token));
  }
  return out;
}

// Per-call memo of piece -> ids: text repeats its words, and the cost of BPE is in the merge loop.
// Keys view the text being encoded, so the memo lives exactly as long as one encode() call.
class PieceCache {
 public:
  bool find(std::string_view piece, std::vector<int64_t>& out) const {
    const auto it = entries_.find(piece);
    if (it == entries_.end()) return false;
    out.insert(out.end(), ids_.begin() + it->second.first, ids_.begin() + it->second.second);
    return true;
  }
  void insert(std::string_view piece, const int32_t* ids, size_t n) {
    if (piece.size() > kLongestCached) return;
    entries_.emplace(piece, std::pair<size_t, size_t>(ids_.size(), ids_.size() + n));
    ids_.insert(ids_.end(), ids, ids + n);
  }

 private:
  static constexpr size_t kLongestCached = 256;  // longer pieces rarely repeat
  std::unordered_map<std::string_view, std::pair<size_t, size_t>> entries_;
  std::vector<int64_t> ids_;
};

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) { return from_json(io::read_json_file(path), path); }

Tokenizer Tokenizer::from_json_string(std::string_view text, const std::string& source) {
  return from_json(io::parse_json(text, source), source);
}

Tokenizer Tokenizer::from_json(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object())
    fail("{}: expected a JSON object, got {}", source, io::describe_json_value(config));
  check_normalizer(member(config, "normalizer"), source);
  check_decoder(member(config, "decoder"), source);
  auto impl = std::make_shared<Impl>(Impl{config, BpeModel::from_json(io::required<nlohmann::json>(config, "model", source), source),
                                          PreTokenizer::from_json(member(config, "pre_tokenizer"), source + " pre_tokenizer"),
                                          {}, {}, {}});
  const std::vector<std::string>& tokens = impl->model.tokens();
  const auto& added_list = member(config, "added_tokens");
  const int64_t id_limit = 4 * int64_t(tokens.size() + (added_list.is_array() ? added_list.size() : 0)) + 1024;
  const std::vector<AddedToken> added = read_added_tokens(added_list, id_limit, source);

  // Decode table: an added token decodes to its content (it takes precedence over a vocabulary
  // entry with the same id); a vocabulary token to the bytes its byte-level text stands for, or,
  // when it is not byte-level text, to that text itself (as Hugging Face's ByteLevel decoder does).
  std::vector<const std::string*> added_by_id;
  for (const AddedToken& token : added) {
    impl->added.add(token.content, int32_t(token.id));
    if (size_t(token.id) >= added_by_id.size()) added_by_id.resize(size_t(token.id) + 1, nullptr);
    added_by_id[size_t(token.id)] = &token.content;
  }
  const size_t n = std::max(tokens.size(), added_by_id.size());
  impl->offsets.reserve(n + 1);
  impl->offsets.push_back(0);
  for (size_t id = 0; id < n; ++id) {
    if (id < added_by_id.size() && added_by_id[id]) {
      impl->decoded += *added_by_id[id];
    } else if (id < tokens.size()) {
      const auto bytes = byte_level::to_bytes(tokens[id]);
      impl->decoded += bytes ? *bytes : tokens[id];
    }
    impl->offsets.push_back(impl->decoded.size());
  }
  return Tokenizer(std::move(impl));
}

void Tokenizer::pre_tokenize(std::string_view text, std::vector<Piece>& pieces, std::deque<std::string>& storage) const {
  std::vector<std::string_view> split;
  // Text between added tokens: valid UTF-8 runs through the pre-tokenizer, invalid runs whole.
  const auto plain = [&](std::string_view segment) {
    while (!segment.empty()) {
      const size_t valid = io::find_invalid_utf8(segment).value_or(segment.size());
      if (valid > 0) {
        split.clear();
        impl_->pre_tokenizer.split(segment.substr(0, valid), split, storage);
        for (std::string_view piece : split) pieces.push_back({piece, -1});
      }
      size_t invalid_end = valid;
      while (invalid_end < segment.size() && io::find_invalid_utf8(segment.substr(invalid_end)) == size_t(0))
        ++invalid_end;
      if (invalid_end > valid) pieces.push_back({segment.substr(valid, invalid_end - valid), -1});
      segment.remove_prefix(invalid_end);
    }
  };
  size_t position = 0;
  while (position < text.size()) {
    const AddedTokens::Match match = impl_->added.find(text, position);
    const size_t end = match.id >= 0 ? match.begin : text.size();
    plain(text.substr(position, end - position));
    if (match.id < 0) break;
    pieces.push_back({text.substr(match.begin, match.length), match.id});
    position = match.begin + match.length;
  }
}

std::vector<int64_t> Tokenizer::encode(std::string_view text) const {
  std::vector<Piece> pieces;
  std::deque<std::string> storage;
  pre_tokenize(text, pieces, storage);
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 16);
  std::vector<int32_t> piece_ids;
  PieceCache cache;
  for (const Piece& piece : pieces) {
    if (piece.added_id >= 0) {
      ids.push_back(piece.added_id);
    } else if (!cache.find(piece.bytes, ids)) {
      piece_ids.clear();
      impl_->model.encode(piece.bytes, piece_ids);
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
      cache.insert(piece.bytes, piece_ids.data(), piece_ids.size());
    }
  }
  return ids;
}

std::vector<std::vector<int64_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts) const {
  std::vector<std::vector<int64_t>> out(texts.size());
  parallel_tasks(int64_t(texts.size()), [&](int64_t i) { out[size_t(i)] = encode(texts[size_t(i)]); });
  return out;
}

std::string Tokenizer::decode(std::span<const int64_t> ids) const {
  const auto& offsets = impl_->offsets;
  const int64_t n = int64_t(offsets.size()) - 1;
  std::string out;
  out.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i];
    if (id < 0 || id >= n) fail("decode: id {} (position {}) out of range [0, {})", id, i, n);
    const size_t begin = offsets[size_t(id)], end = offsets[size_t(id) + 1];
    if (begin == end) fail("decode: id {} (position {}) belongs to no token", id, i);
    out.append(impl_->decoded, begin, end - begin);
  }
  return out;
}

int64_t Tokenizer::vocab_size() const { return int64_t(impl_->offsets.size()) - 1; }

std::optional<int64_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const int32_t id = impl_->added.id_of(token); id >= 0) return id;
  // A linear search: this is for looking up a few special tokens, not for encoding.
  const std::vector<std::string>& tokens = impl_->model.tokens();
  for (size_t id = 0; id < tokens.size(); ++id)
    if (tokens[id] == token) return int64_t(id);
  return std::nullopt;
}

const nlohmann::json& Tokenizer::to_json() const { return impl_->config; }

void Tokenizer::save(const std::string& path) const { io::write_json_file_atomic(path, impl_->config); }

}  // namespace latent::tokenizer

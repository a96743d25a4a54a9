// Hand-computed cases: each Split behavior, invert, String patterns, ByteLevel's prefix space and
// added tokens cutting the text; BPE merge order on a small vocabulary, both merge notations,
// ignore_merges, and long pieces against a plain reference implementation of the merge rule.
#include <random>

#include "fixtures.hpp"

using namespace latent;
using namespace latent::testing;
using tokenizer::Tokenizer;

namespace {

nlohmann::json split(const std::string& regex, const std::string& behavior, bool invert = false) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", behavior}, {"invert", invert}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
}

std::vector<std::string> pieces_of(const Tokenizer& tok, std::string_view text) {
  std::vector<tokenizer::Piece> pieces;
  std::deque<std::string> storage;
  tok.pre_tokenize(text, pieces, storage);
  std::vector<std::string> out;
  for (const auto& p : pieces) {
    std::string& piece = out.emplace_back(p.added_id >= 0 ? "#" : "");
    piece += p.bytes;
  }
  return out;
}

using Pieces = std::vector<std::string>;

}  // namespace

TEST_CASE("Split behaviors cut 'a-b--c' on '-' as Hugging Face does", "[tokenizer]") {
  const auto pieces = [](const std::string& behavior, bool invert = false) {
    return pieces_of(Tokenizer::from_json(small_config({}, nlohmann::json::array(), split("-", behavior, invert))), "a-b--c");
  };
  CHECK(pieces("Isolated") == Pieces{"a", "-", "b", "-", "-", "c"});
  CHECK(pieces("Removed") == Pieces{"a", "b", "c"});
  CHECK(pieces("MergedWithPrevious") == Pieces{"a-", "b-", "-", "c"});
  CHECK(pieces("MergedWithNext") == Pieces{"a", "-b", "-", "-c"});
  CHECK(pieces("Contiguous") == Pieces{"a", "-", "b", "--", "c"});
  CHECK(pieces("Isolated", true) == Pieces{"a", "-", "b", "-", "-", "c"});
  CHECK(pieces("Removed", true) == Pieces{"-", "-", "-"});
}

TEST_CASE("a String pattern matches literally; ByteLevel prepends a space per segment", "[tokenizer]") {
  const nlohmann::json literal = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"String", "."}}}, {"behavior", "Removed"}, {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  CHECK(pieces_of(Tokenizer::from_json(small_config({}, nlohmann::json::array(), literal)), "a.b..c") == Pieces{"a", "b", "c"});

  const nlohmann::json prefix = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  const nlohmann::json added = {{{"id", 256}, {"content", "<s>"}, {"special", true}}};
  const auto tok = Tokenizer::from_json(small_config({}, nlohmann::json::array(), prefix, added));
  CHECK(pieces_of(tok, "hi there<s>you") == Pieces{" hi", " there", "#<s>", " you"});
  CHECK(pieces_of(tok, " x<s><s>") == Pieces{" x", "#<s>", "#<s>"});
  // GPT-2's regex: contractions, letters, digits, other symbols, spaces kept before a non-space.
  const auto gpt2 = Tokenizer::from_json(small_config({}, nlohmann::json::array()));
  CHECK(pieces_of(gpt2, "I'll pay 42$  now!\n") == Pieces{"I", "'ll", " pay", " 42", "$", " ", " now", "!", "\n"});
}

TEST_CASE("added tokens: leftmost, then longest", "[tokenizer]") {
  const nlohmann::json added = {{{"id", 256}, {"content", "<a>"}}, {{"id", 257}, {"content", "<a><b>"}}, {{"id", 258}, {"content", "a>"}}};
  const auto tok = Tokenizer::from_json(small_config({}, nlohmann::json::array(), tokenizer::PreTokenizer::gpt2_json(), added));
  CHECK(pieces_of(tok, "x<a><b><a>a>") == Pieces{"x", "#<a><b>", "#<a>", "#a>"});
  CHECK(tok.encode("<a><b>") == std::vector<int64_t>{257});
  CHECK(tok.decode(std::vector<int64_t>{258, 'z', 256}) == "a>z<a>");
}

TEST_CASE("BPE merges the lowest-ranked pair first, leftmost among equals", "[tokenizer]") {
  const nlohmann::json whole = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  // ids: ab 256, abc 257, bc 258, "Ġc" 259
  const std::vector<std::string> extra{"ab", "abc", "bc", "Ġc"};
  const auto bc_first = Tokenizer::from_json(small_config(extra, {"b c", "a b", "ab c"}, whole));
  CHECK(bc_first.encode("abc") == std::vector<int64_t>{'a', 258});
  CHECK(bc_first.encode("abab c") == std::vector<int64_t>{256, 256, ' ', 'c'});
  using nlohmann::json;
  const json pair_merges = json::array({json::array({"a", "b"}), json::array({"ab", "c"}), json::array({"b", "c"}),
                                        json::array({"Ġ", "c"})});
  const auto ab_first = Tokenizer::from_json(small_config(extra, pair_merges, whole));
  CHECK(ab_first.encode("abc") == std::vector<int64_t>{257});
  CHECK(ab_first.encode("abab c") == std::vector<int64_t>{256, 256, 259});
  CHECK(ab_first.decode(std::vector<int64_t>{257, 259}) == "abc c");

  nlohmann::json ignore = small_config(extra, {"b c"}, whole);
  CHECK(Tokenizer::from_json(ignore).encode("abc") == std::vector<int64_t>{'a', 258});
  ignore["model"]["ignore_merges"] = true;
  CHECK(Tokenizer::from_json(ignore).encode("abc") == std::vector<int64_t>{257});
}

TEST_CASE("long pieces (heap path) merge exactly as the plain rule does", "[tokenizer]") {
  // Merges over the alphabet {a, b, c}: every pair of single letters, then pairs of those.
  std::vector<std::string> extra;
  nlohmann::json merges = nlohmann::json::array();
  const std::string letters = "abc";
  for (char x : letters)
    for (char y : letters) {
      extra.push_back(std::string{x, y});
      merges.push_back(std::string{x} + " " + y);
    }
  for (const char* pair : {"ab ca", "ca bb", "aa aa", "bc ab", "cc a", "b ab"}) {
    std::string s(pair);
    extra.push_back(s.substr(0, s.find(' ')) + s.substr(s.find(' ') + 1));
    merges.push_back(s);
  }
  std::shuffle(merges.begin(), merges.end(), std::mt19937(7));
  const nlohmann::json whole = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  const auto tok = Tokenizer::from_json(small_config(extra, merges, whole));

  // The plain rule on strings: repeatedly merge the leftmost occurrence of the lowest-ranked pair.
  const auto reference = [&](const std::string& text) {
    std::vector<std::string> symbols;
    for (char c : text) symbols.emplace_back(1, c);
    while (true) {
      size_t best = 0, best_rank = merges.size();
      for (size_t i = 0; i + 1 < symbols.size(); ++i)
        for (size_t r = 0; r < best_rank; ++r)
          if (merges[r] == symbols[i] + " " + symbols[i + 1]) {
            best = i;
            best_rank = r;
          }
      if (best_rank == merges.size()) break;
      symbols[best] += symbols[best + 1];
      symbols.erase(symbols.begin() + long(best) + 1);
    }
    std::vector<int64_t> ids;
    for (const auto& s : symbols) ids.push_back(s.size() == 1 ? int64_t(s[0]) : int64_t(*tok.token_to_id(s)));
    return ids;
  };
  std::mt19937 random(1);
  for (int trial = 0; trial < 40; ++trial) {
    std::string text;
    const size_t length = trial < 20 ? 2 + random() % 60 : 65 + random() % 300;  // both code paths
    for (size_t i = 0; i < length; ++i) text += letters[random() % 3];
    INFO(text);
    CHECK(tok.encode(text) == reference(text));
  }
}

// Reading the pre-tokenizer steps from tokenizer.json and applying them, with Hugging Face's rules
// for how a Split's behavior turns matches and the text between them into pieces.
#include "pre_tokenizer.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "../core/error.hpp"
#include "../io/json.hpp"

namespace latent::tokenizer {

namespace {

// GPT-2's regex, which Hugging Face's ByteLevel uses when use_regex is true.
constexpr std::string_view kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

SplitBehavior parse_behavior(const std::string& name, const std::string& context) {
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  fail("{}: Split behavior '{}' is not one of Removed, Isolated, MergedWithPrevious, "
       "MergedWithNext, Contiguous",
       context, name);
}

// Sequence nesting flattened, in order.
void flatten(const nlohmann::json& config, const std::string& context, std::vector<nlohmann::json>& out, int depth = 0) {
  if (!config.is_object())
    fail("{}: expected an object, got {}", context, io::describe_json_value(config));
  const auto type = io::required<std::string>(config, "type", context);
  if (type != "Sequence") {
    out.push_back(config);
    return;
  }
  if (depth > 16) fail("{}: Sequence nested more than 16 deep", context);
  const auto& steps = config.contains("pretokenizers") ? config["pretokenizers"] : nlohmann::json();
  if (!steps.is_array())
    fail("{}: Sequence needs an array 'pretokenizers', got {}", context, io::describe_json_value(steps));
  for (size_t i = 0; i < steps.size(); ++i)
    flatten(steps[i], fmt::format("{}.pretokenizers[{}]", context, i), out, depth + 1);
}

struct Segment {
  size_t begin, end;
  bool is_match;
};

// Hugging Face's split: the text as alternating matches and gaps, then grouped by behavior
// (Isolated: every segment its own piece; Removed: matches dropped; Contiguous: adjacent matches
// joined; MergedWithPrevious / MergedWithNext: a match joined to the gap before / after it).
void split_segments(std::vector<Segment>& segments, SplitBehavior behavior) {
  std::vector<Segment> out;
  out.reserve(segments.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::isolated:
      for (auto& s : segments) s.is_match = false;
      return;
    case SplitBehavior::removed:
      return;
    case SplitBehavior::contiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back({s.begin, s.end, false});
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::merged_with_previous:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back({s.begin, s.end, false});
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::merged_with_next:
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty())
          out.back().begin = it->begin;
        else
          out.push_back({it->begin, it->end, false});
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  segments = std::move(out);
}

}  // namespace

nlohmann::json PreTokenizer::gpt2_json() {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
}

PreTokenizer PreTokenizer::from_json(const nlohmann::json& config, const std::string& context) {
  if (config.is_null())
    fail("{}: null is not supported (a byte-level BPE needs a ByteLevel pre-tokenizer)", context);
  std::vector<nlohmann::json> steps;
  flatten(config, context, steps);
  PreTokenizer out;
  for (size_t i = 0; i < steps.size(); ++i) {
    const nlohmann::json& step = steps[i];
    const auto type = io::required<std::string>(step, "type", context);
    if (type == "Split") {
      const auto& pattern = io::required<nlohmann::json>(step, "pattern", context);
      const bool is_regex = pattern.is_object() && pattern.contains("Regex");
      if (!is_regex && !(pattern.is_object() && pattern.contains("String")))
        fail("{}: Split pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}, got {}", context,
             io::describe_json_value(pattern));
      const auto text = io::required<std::string>(pattern, is_regex ? "Regex" : "String", context + " Split pattern");
      const auto behavior = parse_behavior(io::required<std::string>(step, "behavior", context + " Split"), context);
      const bool invert = io::optional<bool>(step, "invert", false, context + " Split");
      out.steps_.push_back({std::make_shared<const Regex>(text, !is_regex, context + " Split"), behavior, invert});
    } else if (type == "ByteLevel") {
      if (i + 1 != steps.size())
        fail("{}: ByteLevel must be the last pre-tokenizer (a step after it would see "
             "byte-level text)",
             context);
      if (io::optional<bool>(step, "add_prefix_space", true, context + " ByteLevel")) out.steps_.push_back({});
      if (io::optional<bool>(step, "use_regex", true, context + " ByteLevel"))
        out.steps_.push_back({std::make_shared<const Regex>(kGpt2Pattern, false, context + " ByteLevel"),
                              SplitBehavior::isolated, false});
      return out;
    } else {
      fail("{}: pre-tokenizer '{}' is not supported (byte-level BPE: ByteLevel, or a Sequence of "
           "Split ending with ByteLevel)",
           context, type);
    }
  }
  fail("{}: no ByteLevel pre-tokenizer (a byte-level BPE needs one, last)", context);
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces,
                         std::deque<std::string>& storage) const {
  std::vector<std::string_view> current{text}, next;
  std::vector<std::pair<size_t, size_t>> matches;
  std::vector<Segment> segments;
  for (const Step& step : steps_) {
    next.clear();
    for (std::string_view piece : current) {
      if (!step.regex) {
        if (piece.empty() || piece.front() == ' ') {
          next.push_back(piece);
        } else {
          std::string& prefixed = storage.emplace_back(1, ' ');
          prefixed += piece;
          next.push_back(prefixed);
        }
        continue;
      }
      step.regex->find_all(piece, matches);
      segments.clear();
      size_t previous = 0;
      for (const auto& [begin, end] : matches) {
        if (begin > previous) segments.push_back({previous, begin, false});
        segments.push_back({begin, end, true});
        previous = end;
      }
      if (previous < piece.size()) segments.push_back({previous, piece.size(), false});
      if (step.invert)
        for (auto& s : segments) s.is_match = !s.is_match;
      split_segments(segments, step.behavior);
      for (const Segment& s : segments)
        if (!s.is_match && s.end > s.begin) next.push_back(piece.substr(s.begin, s.end - s.begin));
    }
    current.swap(next);
  }
  for (std::string_view piece : current)
    if (!piece.empty()) pieces.push_back(piece);
}

}  // namespace latent::tokenizer

// JSON parsing with line/column errors and duplicate-key refusal, typed-lookup errors, UTF-8 checks.
#include "json.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "atomic_file.hpp"

namespace latent::io {

namespace {

std::string prefix(const std::string& context) { return context.empty() ? std::string() : context + ": "; }

// nlohmann reports a byte position; people look for a line and a column.
std::string line_and_column(std::string_view text, size_t byte_position) {
  const size_t end = std::min(byte_position > 0 ? byte_position - 1 : 0, text.size());
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < end; ++i)
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  return fmt::format("line {}, column {}", line, end - line_start + 1);
}

// "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ..." -> "syntax error ...".
std::string parse_error_reason(const nlohmann::json::parse_error& e) {
  const std::string what = e.what();
  const size_t at = what.find("parse error");
  const size_t colon = at == std::string::npos ? std::string::npos : what.find(": ", at);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// Compact JSON text of `value`, abandoned once `out` passes `limit`: error messages show the start
// of a value, and a hostile header (100 MB of '[') must not cost a full dump or overflow the stack.
// Each level adds a character before descending, so the recursion stops within `limit` levels.
void render_prefix(const nlohmann::json& value, std::string& out, size_t limit) {
  constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
  if (out.size() > limit) return;
  if (value.is_array() || value.is_object()) {
    out += value.is_array() ? '[' : '{';
    bool first = true;
    for (auto it = value.begin(); it != value.end() && out.size() <= limit; ++it) {
      if (!first) out += ',';
      first = false;
      if (value.is_object()) out += nlohmann::json(it.key().substr(0, limit + 1)).dump(-1, ' ', false, kReplace) + ":";
      render_prefix(*it, out, limit);
    }
    out += value.is_array() ? ']' : '}';
  } else if (value.is_string()) {
    const std::string& text = value.get_ref<const std::string&>();
    out += nlohmann::json(text.substr(0, limit + 1)).dump(-1, ' ', false, kReplace);
  } else {
    out += value.dump();
  }
}

}  // namespace

std::optional<size_t> find_invalid_utf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char lead = bytes[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    // Sequence length and the allowed range of the second byte (which rules out overlong forms,
    // UTF-16 surrogates D800-DFFF and code points above 10FFFF), as in Unicode's table 3-7.
    size_t length;
    unsigned char low = 0x80, high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF)
      length = 2;
    else if (lead == 0xE0)
      length = 3, low = 0xA0;
    else if (lead >= 0xE1 && lead <= 0xEC)
      length = 3;
    else if (lead == 0xED)
      length = 3, high = 0x9F;
    else if (lead >= 0xEE && lead <= 0xEF)
      length = 3;
    else if (lead == 0xF0)
      length = 4, low = 0x90;
    else if (lead >= 0xF1 && lead <= 0xF3)
      length = 4;
    else if (lead == 0xF4)
      length = 4, high = 0x8F;
    else
      return i;
    if (i + length > n) return i;
    if (bytes[i + 1] < low || bytes[i + 1] > high) return i;
    for (size_t k = 2; k < length; ++k)
      if (bytes[i + k] < 0x80 || bytes[i + k] > 0xBF) return i;
    i += length;
  }
  return std::nullopt;
}

std::string describe_json_value(const nlohmann::json& value) {
  constexpr size_t kMaxShown = 60;
  if (value.is_null()) return "null";
  std::string shown;
  render_prefix(value, shown, kMaxShown);
  if (shown.size() > kMaxShown) shown = shown.substr(0, kMaxShown) + "...";
  const char* type = value.is_boolean() ? "boolean" : value.is_number() ? "number" : value.type_name();
  return std::string(type) + " " + shown;
}

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  if (const auto bad = find_invalid_utf8(text))
    fail("{}invalid JSON: not UTF-8 at {}", prefix(source), line_and_column(text, *bad + 1));
  // One set of keys per open object; a key event belongs to the innermost one.
  struct OpenObject {
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<OpenObject> open;
  const auto check_duplicates = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) {
      open.emplace_back();
    } else if (event == Event::object_end) {
      open.pop_back();
    } else if (event == Event::key) {
      const std::string key = parsed.get<std::string>();
      if (!open.back().keys.insert(key).second) {
        const std::string where = open.size() >= 2 ? " in '" + open[open.size() - 2].last_key + "'" : "";
        fail("{}invalid JSON: duplicate key '{}'{}", prefix(source), key, where);
      }
      open.back().last_key = key;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), check_duplicates);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}invalid JSON at {}: {}", prefix(source), line_and_column(text, e.byte), parse_error_reason(e));
  } catch (const nlohmann::json::out_of_range& e) {
    // A number beyond double's range (1e400): nlohmann refuses it with an exception of its own,
    // "[json.exception.out_of_range.406] number overflow parsing '1e400'".
    const std::string what = e.what();
    const size_t end_of_tag = what.find("] ");
    fail("{}invalid JSON: {}", prefix(source), end_of_tag == std::string::npos ? what : what.substr(end_of_tag + 2));
  }
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) fail("{}: read failed", path);
  return parse_json(contents.str(), path);
}

void write_json_file_atomic(const std::string& path, const nlohmann::json& value) {
  std::string text;
  try {
    text = value.dump(2) + "\n";
  } catch (const nlohmann::json::type_error& e) {  // a string that is not UTF-8
    fail("{}: cannot write JSON: {}", path, e.what());
  }
  write_file_atomic(path, text);
}

namespace detail {

void throw_json_type_error(const std::string& context, const std::string& what, const char* expected,
                           const nlohmann::json& value) {
  fail("{}{} must be {}, got {}", prefix(context), what, expected, describe_json_value(value));
}

void throw_json_range_error(const std::string& context, const std::string& what, int64_t low, uint64_t high,
                            const nlohmann::json& value) {
  fail("{}{} must be an integer in [{}, {}], got {}", prefix(context), what, low, high, describe_json_value(value));
}

void throw_json_missing_key(const std::string& context, const std::string& key) {
  fail("{}key '{}' missing", prefix(context), key);
}

void require_object(const nlohmann::json& object, const std::string& context) {
  if (!object.is_object()) fail("{}expected a JSON object, got {}", prefix(context), describe_json_value(object));
}

}  // namespace detail

}  // namespace latent::io

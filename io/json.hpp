// Reading and writing JSON files (config.json, trainer state) with errors that name the file and
// the key: typed `required`/`optional` lookups that refuse 3.5 or true where an integer belongs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"

namespace latent::io {

// Parses `text` strictly: syntax errors report "<source>: invalid JSON at line L, column C: ...",
// and an object that repeats a key is refused (most parsers silently keep one of the values).
nlohmann::json parse_json(std::string_view text, const std::string& source);

// Reads and parses a file with parse_json; a missing or unreadable file is a latent::Error too.
nlohmann::json read_json_file(const std::string& path);

// Writes `value` pretty-printed (2-space indent, trailing newline) through write_file_atomic.
void write_json_file_atomic(const std::string& path, const nlohmann::json& value);

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or nullopt when all of `text` is valid. JSON text must be UTF-8.
std::optional<size_t> find_invalid_utf8(std::string_view text);

// `string "abc"`, `number 3.5`, `boolean true`, `null`, ...: how errors show an offending value
// (long values are cut short).
std::string describe_json_value(const nlohmann::json& value);

namespace detail {
[[noreturn]] void throw_json_type_error(const std::string& context, const std::string& what, const char* expected,
                                        const nlohmann::json& value);
[[noreturn]] void throw_json_range_error(const std::string& context, const std::string& what, int64_t low,
                                         uint64_t high, const nlohmann::json& value);
[[noreturn]] void throw_json_missing_key(const std::string& context, const std::string& key);
void require_object(const nlohmann::json& object, const std::string& context);

template <class T> struct is_vector : std::false_type {};
template <class U> struct is_vector<std::vector<U>> : std::true_type {};
template <class T> struct is_string_map : std::false_type {};
template <class U> struct is_string_map<std::map<std::string, U>> : std::true_type {};
}  // namespace detail

// Converts `value` to T with the checks config files need. `what` says where the value sits
// ("key 'hidden_size'") and `context` which file or section ("config.json"); errors read
// "config.json: key 'hidden_size' must be an integer, got string \"abc\"".
// T: bool, any integer type (JSON integers only, range-checked), float/double (integers accepted),
// std::string, nlohmann::json (anything), std::vector<U> and std::map<std::string, U> of those.
template <class T> T json_as(const nlohmann::json& value, const std::string& what, const std::string& context) {
  if constexpr (std::is_same_v<T, nlohmann::json>) {
    return value;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!value.is_boolean()) detail::throw_json_type_error(context, what, "a boolean", value);
    return value.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    // JSON has one number type; an integer field must still be written as an integer, because
    // 3.5 (or 3.0, which Python writes for floats) in a size field is a mistake worth hearing about.
    if (!value.is_number_integer()) detail::throw_json_type_error(context, what, "an integer", value);
    using Limits = std::numeric_limits<T>;
    const auto out_of_range = [&] {
      detail::throw_json_range_error(context, what, Limits::min(), Limits::max(), value);
    };
    if (!value.is_number_unsigned() && value.get<int64_t>() < 0) {  // (for unsigned T, min() is 0)
      const int64_t v = value.get<int64_t>();
      if (v < static_cast<int64_t>(Limits::min())) out_of_range();
      return static_cast<T>(v);
    }
    const uint64_t v = value.is_number_unsigned() ? value.get<uint64_t>() : static_cast<uint64_t>(value.get<int64_t>());
    if (v > static_cast<uint64_t>(Limits::max())) out_of_range();
    return static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!value.is_number()) detail::throw_json_type_error(context, what, "a number", value);
    return static_cast<T>(value.get<double>());
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!value.is_string()) detail::throw_json_type_error(context, what, "a string", value);
    return value.get<std::string>();
  } else if constexpr (detail::is_vector<T>::value) {
    if (!value.is_array()) detail::throw_json_type_error(context, what, "an array", value);
    T out;
    out.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i)
      out.push_back(json_as<typename T::value_type>(value[i], fmt::format("{}[{}]", what, i), context));
    return out;
  } else if constexpr (detail::is_string_map<T>::value) {
    if (!value.is_object()) detail::throw_json_type_error(context, what, "an object", value);
    T out;
    for (const auto& [key, item] : value.items())
      out.emplace(key, json_as<typename T::mapped_type>(item, fmt::format("{}['{}']", what, key), context));
    return out;
  } else {
    static_assert(sizeof(T) == 0, "json_as: unsupported type");
  }
}

// object[key] as T; Error "<context>: key '<key>' missing" when absent (an explicit null is
// present, and refused unless T is nlohmann::json).
template <class T> T required(const nlohmann::json& object, const std::string& key, const std::string& context) {
  detail::require_object(object, context);
  const auto it = object.find(key);
  if (it == object.end()) detail::throw_json_missing_key(context, key);
  return json_as<T>(*it, "key '" + key + "'", context);
}

// object[key] as T, or `default_value` when the key is absent or null (Hugging Face configs write
// null for "not set"). T is named explicitly, optional<double>(j, "rope_theta", 10000, ...), so
// an integer default cannot silently make a float field integer-only.
template <class T>
T optional(const nlohmann::json& object, const std::string& key, const std::type_identity_t<T>& default_value,
           const std::string& context) {
  detail::require_object(object, context);
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return default_value;
  return json_as<T>(*it, "key '" + key + "'", context);
}

}  // namespace latent::io

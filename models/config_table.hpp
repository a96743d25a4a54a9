// The table that drives a model config's config.json keys: each key is spelled once, beside the
// member it fills, whether a file must hold it, and the check validation applies; reading, writing
// and the per-key checks all walk the same table. Enum members travel as strings at the JSON boundary.
#pragma once
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "../core/error.hpp"
#include "../io/json.hpp"

namespace latent::models::config_table {

enum class Presence {
  kRequired,        // a file without the key is refused
  kRequiredOrNull,  // must be there; null means the member's default (HF writes null for "none")
  kOptional,        // absent or null: the member's default
};

enum class Check { kNone, kPositive, kNonNegative, kFinite, kFinitePositive, kFiniteNonNegative };

// One config.json key. Config's default member initialisers are the defaults.
template <class Config, class... Enums>
struct Key {
  std::string_view name;
  std::variant<int64_t Config::*, double Config::*, bool Config::*, std::string Config::*, Enums Config::*...> member;
  Presence presence = Presence::kRequired;
  Check check = Check::kNone;
  bool zero_is_null = false;  // written as null when 0 (q_lora_rank: HF's "no compression")
};

// An enum's spellings: a `names(E)` function found by argument-dependent lookup returns an array of
// {value, "spelling"} pairs (see DeepSeekV3Config's ScoringFunc).
template <class E> std::string_view enum_to_string(E value) {
  for (const auto& [candidate, name] : names(E{}))
    if (candidate == value) return name;
  fail("config: enum value {} has no name", static_cast<int>(value));
}

template <class E> E enum_from_string(std::string_view text, std::string_view key, const std::string& context) {
  std::string allowed;
  for (const auto& [value, name] : names(E{})) {
    if (name == text) return value;
    allowed += fmt::format("{}'{}'", allowed.empty() ? "" : ", ", name);
  }
  fail("{}: key '{}' is '{}'; allowed: {}", context, key, text, allowed);
}

template <class T> void check_value(const T& value, Check check, std::string_view key, const std::string& context) {
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    const bool finite_required = check == Check::kFinite || check == Check::kFinitePositive || check == Check::kFiniteNonNegative;
    if (finite_required && !std::isfinite(double(value)))
      fail("{}: key '{}' must be finite, got {}", context, key, value);
    if ((check == Check::kPositive || check == Check::kFinitePositive) && !(value > 0))
      fail("{}: key '{}' must be positive, got {}", context, key, value);
    if ((check == Check::kNonNegative || check == Check::kFiniteNonNegative) && !(value >= 0))
      fail("{}: key '{}' must be >= 0, got {}", context, key, value);
  }
}

// Fills c from j's keys; a present value is checked at once, so an explicit 0 where 0 means "derive
// it" is still refused.
template <class Config, class Table>
void read(Config& c, const nlohmann::json& j, const Table& table, const std::string& context) {
  for (const auto& key : table) {
    std::visit(
        [&](auto member) {
          using T = std::remove_cvref_t<decltype(c.*member)>;
          const std::string name(key.name);
          const auto it = j.find(name);
          if (it == j.end() && key.presence != Presence::kOptional) io::required<nlohmann::json>(j, name, context);  // throws
          if (it == j.end() || (it->is_null() && key.presence != Presence::kRequired)) return;
          if constexpr (std::is_enum_v<T>) {
            c.*member = enum_from_string<T>(io::json_as<std::string>(*it, "key '" + name + "'", context), name, context);
          } else {
            c.*member = io::json_as<T>(*it, "key '" + name + "'", context);
            check_value(c.*member, key.check, key.name, context);
          }
        },
        key.member);
  }
}

template <class Config, class Table> void write(const Config& c, nlohmann::json& j, const Table& table) {
  for (const auto& key : table) {
    std::visit(
        [&](auto member) {
          using T = std::remove_cvref_t<decltype(c.*member)>;
          const std::string name(key.name);
          if constexpr (std::is_enum_v<T>) {
            j[name] = std::string(enum_to_string(c.*member));
          } else {
            if constexpr (std::is_same_v<T, int64_t>)
              if (key.zero_is_null && c.*member == 0) {
                j[name] = nullptr;
                return;
              }
            j[name] = c.*member;
          }
        },
        key.member);
  }
}

// The per-key checks of the table (the cross-key rules stay with each config's validate()).
template <class Config, class Table> void check(const Config& c, const Table& table, const std::string& context) {
  for (const auto& key : table)
    std::visit([&](auto member) { check_value(c.*member, key.check, key.name, context); }, key.member);
}

}  // namespace latent::models::config_table

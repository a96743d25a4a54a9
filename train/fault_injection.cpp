// Parsing of the training layer's fault-injection variables (see fault_injection.hpp).
#include "fault_injection.hpp"

#include <atomic>
#include <charconv>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>

#include "../core/error.hpp"

namespace latent::train {

int64_t crash_point_for_this_save() {
  static std::atomic<int64_t> saves_in_process{0};
  const int64_t save = ++saves_in_process;
  const char* spec = std::getenv("LATENT_FAULT_INJECT");
  if (spec == nullptr || *spec == '\0') return 0;
  const std::string_view text(spec);
  const size_t colon = text.find(':');
  int64_t wanted_save = 0, point = 0;
  const auto parse = [](std::string_view digits, int64_t& value) {
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return error == std::errc() && end == digits.data() + digits.size() && value > 0;
  };
  if (colon == std::string_view::npos || !parse(text.substr(0, colon), wanted_save) || !parse(text.substr(colon + 1), point))
    fail("LATENT_FAULT_INJECT: expected <save>:<point> with positive integers, got '{}'", text);
  return save == wanted_save ? point : 0;
}

std::set<int64_t> injected_nonfinite_steps() {
  std::set<int64_t> steps;
  if (const char* list = std::getenv("LATENT_TRAIN_TEST_NONFINITE")) {
    std::stringstream ss(list);
    for (std::string item; std::getline(ss, item, ',');) {
      if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos)
        fail("LATENT_TRAIN_TEST_NONFINITE: '{}' is not a list of step numbers", list);
      steps.insert(std::stoll(item));
    }
  }
  return steps;
}

}  // namespace latent::train

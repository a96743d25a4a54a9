// The progress bar or lines, and durations as a person reads them.
#include "progress.hpp"

#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

namespace latent::train {

Progress::Progress() : tty_(::isatty(STDERR_FILENO)) {}

void Progress::show(const std::string& line, int64_t step, int64_t steps) {
  if (!tty_) return fmt::print(stderr, "{}\n", line);
  const int width = 24, filled = int(double(width) * double(step) / double(steps));
  fmt::print(stderr, "\r[{}{}] {}\x1b[K", std::string(size_t(filled), '#'), std::string(size_t(width - filled), '.'), line);
  line_open_ = true;
}

void Progress::end_line() {
  if (line_open_) fmt::print(stderr, "\n");
  line_open_ = false;
}

std::string format_duration(double seconds) {
  const int s = int(std::max(0.0, seconds));
  return s >= 3600 ? fmt::format("{}h{:02}m", s / 3600, s / 60 % 60) : fmt::format("{}m{:02}s", s / 60, s % 60);
}

}  // namespace latent::train

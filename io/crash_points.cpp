// The crash points' counter and the kill (see crash_points.hpp).
#include "crash_points.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <string>

namespace latent::io {

namespace {

std::atomic<int64_t> crash_at{0};  // 0: crash points are unarmed
std::atomic<int64_t> crash_points_seen{0};

}  // namespace

CrashPoints::CrashPoints(int64_t kill_at) {
  crash_points_seen.store(0, std::memory_order_relaxed);
  crash_at.store(kill_at, std::memory_order_relaxed);
}

CrashPoints::~CrashPoints() { crash_at.store(0, std::memory_order_relaxed); }

void crash_point(const char* event, std::string_view subject) {
  const int64_t target = crash_at.load(std::memory_order_relaxed);
  if (target <= 0) return;
  const int64_t reached = crash_points_seen.fetch_add(1, std::memory_order_relaxed) + 1;
  if (reached != target) return;
  // write(2), not stdio: the message must reach stderr before the kill, and nothing else may be flushed.
  const std::string message = fmt::format("fault injection: killed at crash point {}: {} {}\n", reached, event, subject);
  [[maybe_unused]] const ssize_t written = ::write(STDERR_FILENO, message.data(), message.size());
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);  // not reached: SIGKILL cannot be caught
}

}  // namespace latent::io

// Crash points: test-only fault injection that kills the process at chosen instants of a multi-step
// file protocol (checkpoints). Internal: not installed; the library's writers and the tests include it.
#pragma once
#include <cstdint>
#include <string_view>

namespace latent::io {

// A multi-step file protocol calls crash_point() at every instant where a crash would leave a
// distinct state on disk; write_file_atomic has four (temporary created, written, synced, renamed).
// Unarmed, a crash point is one relaxed atomic load. While a CrashPoints object armed with n > 0
// lives, the n-th crash point reached prints "fault injection: killed at crash point n: <event>
// <subject>" on stderr and kills the process with SIGKILL, exactly as `kill -9` would: no
// destructors, no stdio flush, no cleanup. Tests use it to crash a save at each of its points in turn.
class CrashPoints {
 public:
  explicit CrashPoints(int64_t kill_at);  // 0 arms nothing
  ~CrashPoints();
  CrashPoints(const CrashPoints&) = delete;
  CrashPoints& operator=(const CrashPoints&) = delete;
};

void crash_point(const char* event, std::string_view subject = {});

}  // namespace latent::io

// Test-only fault injection of the training layer, read from the environment: crashes inside a
// checkpoint save and non-finite losses at chosen steps. Internal: not installed; the suite drives
// these hooks through latent-train's environment so that crash safety and --on-nonfinite are tested
// deterministically.
#pragma once
#include <cstdint>
#include <set>

namespace latent::train {

// LATENT_FAULT_INJECT=<save>:<point>: the <save>-th save_checkpoint call of the process (1-based)
// kills the process with SIGKILL at its <point>-th crash point (io::crash_point: the instant after
// each create, write, fsync, rename and removal of the protocol in checkpoint.hpp), printing which
// one on stderr. A point beyond the save's last one does nothing, so a test finds the number of
// points by raising <point> until the save completes. Called once per save (it counts the saves);
// returns the point to arm for this one, 0 for none. A malformed value throws latent::Error.
int64_t crash_point_for_this_save();

// LATENT_TRAIN_TEST_NONFINITE="3,7": the Trainer makes rank 0's cross-entropy NaN at steps 3 and 7
// (1-based), as a diverging batch would. Empty when unset; a malformed list throws latent::Error.
std::set<int64_t> injected_nonfinite_steps();

}  // namespace latent::train

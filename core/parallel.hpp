// The thread policy: one oneTBB pool sized by set_num_threads / LATENT_NUM_THREADS, BLAS single-threaded.
// Work is cut into chunks whose boundaries depend only on the problem size, never on the thread count,
// so results (reductions included) are bitwise identical whatever the number of threads.
#pragma once
#include <cstdint>
#include <functional>

namespace latent {

void set_num_threads(int n);  // n >= 1; call between parallel regions, not from inside one
int get_num_threads();        // LATENT_NUM_THREADS, else the hardware concurrency

// Runs fn(begin, end) over [0, n) cut into chunks of `grain` (the last may be shorter), in parallel.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
// Runs fn(i) for i in [0, n) as independent tasks (experts, heads, batch entries).
void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn);

// Multiply-adds below which a parallel region costs more than it saves: waking the pool and joining
// it takes microseconds, about what one core needs for this much arithmetic (a decoding step's
// experts, a few GEMVs).
inline constexpr int64_t kMinParallelWork = 1 << 21;
// parallel_tasks for tasks whose total cost is `work` multiply-adds: run in order on the calling
// thread when work < kMinParallelWork.
void parallel_tasks(int64_t n, int64_t work, const std::function<void(int64_t)>& fn);

}  // namespace latent

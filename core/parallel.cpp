// One tbb::task_arena for the process; OpenBLAS pinned to one thread so the two never compete.
#include "parallel.hpp"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include "error.hpp"

namespace latent {
namespace {

// Created on first use. `threads` is read on every parallel_for, so it is an atomic load rather
// than a lock; the arena is replaced only by set_num_threads, which must not race with parallel work.
struct Pool {
  std::mutex mutex;
  std::atomic<int> threads{0};  // 0 until initialised
  std::unique_ptr<tbb::task_arena> arena;
};

Pool& pool() {
  static Pool* instance = new Pool();
  return *instance;
}

int default_threads() {
  if (const char* env = std::getenv("LATENT_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= 1024) return static_cast<int>(n);
    fail("LATENT_NUM_THREADS: expected a positive integer, got '{}'", env);
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

void configure(Pool& p, int n) {  // with p.mutex held
  openblas_set_num_threads(1);
  p.arena = std::make_unique<tbb::task_arena>(n);
  p.threads.store(n, std::memory_order_release);
}

Pool& initialised_pool() {
  Pool& p = pool();
  if (p.threads.load(std::memory_order_acquire) == 0) {
    std::lock_guard lock(p.mutex);
    if (p.threads.load(std::memory_order_relaxed) == 0) configure(p, default_threads());
  }
  return p;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) fail("set_num_threads: expected n >= 1, got {}", n);
  Pool& p = pool();
  std::lock_guard lock(p.mutex);
  configure(p, n);
}

int get_num_threads() { return initialised_pool().threads.load(std::memory_order_acquire); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  Pool& p = initialised_pool();
  if (chunks == 1 || p.threads.load(std::memory_order_acquire) == 1) {
    for (int64_t c = 0; c < chunks; ++c) fn(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
  p.arena->execute([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks, 1), [&](const tbb::blocked_range<int64_t>& r) {
      for (int64_t c = r.begin(); c < r.end(); ++c) fn(c * grain, std::min(n, (c + 1) * grain));
    }, tbb::simple_partitioner());
  });
}

void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn) {
  parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fn(i);
  });
}

void parallel_tasks(int64_t n, int64_t work, const std::function<void(int64_t)>& fn) {
  if (work >= kMinParallelWork) return parallel_tasks(n, fn);
  for (int64_t i = 0; i < n; ++i) fn(i);
}

}  // namespace latent

// What the compiled CPU kernels share: instruction-set clones and a parallel loop on XLA's intra-op thread pool.

#ifndef MVIT_JAX_MODELS_CPU_CSRC_CPU_PARALLEL_H_
#define MVIT_JAX_MODELS_CPU_CSRC_CPU_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include "xla/ffi/api/ffi.h"

// A function marked MVIT_CLONES is compiled for AVX-512, AVX2 and the baseline; the loader picks one per CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MVIT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MVIT_CLONES
#endif

namespace mvit {

// Runs task(i) for i in [0, tasks) on the calling thread and XLA's intra-op pool, and returns when all are done.
// Tasks are claimed from a shared counter; a helper that starts late finds none left and touches only the
// counters, which it keeps alive itself (the call may have returned by then).
inline void ParallelFor(xla::ffi::ThreadPool& pool, int64_t tasks, std::function<void(int64_t)> task) {
  struct Counters {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> finished{0};
  };
  auto counters = std::make_shared<Counters>();
  auto work = [task, tasks, counters]() {
    for (int64_t i; (i = counters->next.fetch_add(1)) < tasks;) {
      task(i);
      counters->finished.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(tasks - 1, pool.num_threads());
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(std::function<void()>(work));
  work();
  while (counters->finished.load(std::memory_order_acquire) < tasks) {
  }
}

}  // namespace mvit

#endif  // MVIT_JAX_MODELS_CPU_CSRC_CPU_PARALLEL_H_

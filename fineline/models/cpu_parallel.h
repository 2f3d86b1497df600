// The native kernels' one threading helper: they run their own threads over single-threaded
// BLAS calls.

#ifndef FINELINE_MODELS_CPU_PARALLEL_H_
#define FINELINE_MODELS_CPU_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

// Runs task(i) for i in [0, n) on `threads` threads (this one included), each taking the
// next index not yet taken.
template <class F>
void parallel_for(int64_t n, int64_t threads, const F& task) {
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n;) task(i);
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < std::min(threads, n); ++t) pool.emplace_back(worker);
  worker();
  for (auto& thread : pool) thread.join();
}

#endif  // FINELINE_MODELS_CPU_PARALLEL_H_

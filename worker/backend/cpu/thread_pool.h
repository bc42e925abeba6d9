// A small persistent thread pool for CPU kernels: one parallel region at a
// time, its parts claimed dynamically by the calling thread and the workers.
//
// Kernels are short (tens of microseconds for a decode GEMV), so workers spin
// briefly on an epoch counter before sleeping on a condition variable, and a
// region never waits for a worker that has not started on it: a worker the
// OS runs late (a busy machine) simply finds the parts taken. The caller
// waits only for workers that joined, and each holds at most one part.
//
// Thread-safety: Run() and its wrappers are called by one thread at a time
// (the backend's caller). Not reentrant: `fn` must not call Run().
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace strata::backend {

class ThreadPool {
 public:
  // num_threads: total threads including the caller; 0 means
  // std::thread::hardware_concurrency().
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(part, thread) once for each part in [0, num_parts), in parallel,
  // and returns when all are done. `thread` in [0, num_threads) names the
  // thread running the part (0 is the caller), for per-thread scratch; parts
  // go to whichever thread claims them first.
  template <typename Fn>
  void Run(int num_parts, Fn&& fn) {
    if (num_parts <= 0) return;
    if (num_parts == 1 || num_threads_ == 1) {
      for (int p = 0; p < num_parts; ++p) fn(p, 0);
      return;
    }
    using Callable = std::remove_reference_t<Fn>;
    RunErased(
        num_parts, const_cast<void*>(static_cast<const void*>(&fn)),
        [](void* ctx, int part, int thread) { (*static_cast<Callable*>(ctx))(part, thread); });
  }

  // Splits [0, count) into contiguous ranges, one per thread (fewer when
  // count < num_threads * min_chunk), and calls fn(begin, end, thread) on each.
  template <typename Fn>
  void ParallelFor(int64_t count, int64_t min_chunk, Fn&& fn) {
    if (count <= 0) return;
    if (min_chunk < 1) min_chunk = 1;
    int64_t parts = std::min<int64_t>(num_threads_, (count + min_chunk - 1) / min_chunk);
    if (parts < 1) parts = 1;
    Run(static_cast<int>(parts), [&](int part, int thread) {
      const int64_t begin = count * part / parts;
      const int64_t end = count * (part + 1) / parts;
      if (begin < end) fn(begin, end, thread);
    });
  }

  // Splits [0, count) into chunks of `chunk` (the last may be shorter), taken
  // in order by the threads as they come free; calls fn(begin, end, thread).
  template <typename Fn>
  void ParallelForDynamic(int64_t count, int64_t chunk, Fn&& fn) {
    if (count <= 0) return;
    if (chunk < 1) chunk = 1;
    const int64_t chunks = (count + chunk - 1) / chunk;
    std::atomic<int64_t> next{0};
    Run(static_cast<int>(std::min<int64_t>(num_threads_, chunks)), [&](int, int thread) {
      for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
           c = next.fetch_add(1, std::memory_order_relaxed)) {
        fn(c * chunk, std::min(count, (c + 1) * chunk), thread);
      }
    });
  }

 private:
  using ErasedFn = void (*)(void* ctx, int part, int thread);
  // Bit of state_ that closes the current region to new workers; the bits
  // below count the workers inside it.
  static constexpr uint32_t kClosed = 1u << 31;

  void RunErased(int num_parts, void* ctx, ErasedFn fn);
  void WorkerLoop(int thread_index);
  void ClaimParts(int thread_index);

  const int num_threads_;
  std::vector<std::thread> workers_;

  // The current region. ctx_, fn_ and num_parts_ are written before state_
  // opens the region (release) and read by a worker after it joins (acquire).
  void* ctx_ = nullptr;
  ErasedFn fn_ = nullptr;
  int num_parts_ = 0;
  std::atomic<int> next_part_{0};
  std::atomic<uint32_t> state_{kClosed};
  std::atomic<uint64_t> epoch_{0};  // bumped for each region, to wake workers
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace strata::backend

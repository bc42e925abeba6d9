#include "worker/backend/cpu/thread_pool.h"

#include <immintrin.h>

#include <chrono>

namespace strata::backend {
namespace {

int ResolveThreads(int num_threads) {
  if (num_threads > 0) return num_threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

// How long an idle worker spins before sleeping: long enough to cover the gap
// between two kernels of one forward pass, short enough not to steal a core
// from OpenBLAS or other processes for long.
constexpr auto kSpinTime = std::chrono::microseconds(200);

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(ResolveThreads(num_threads)) {
  workers_.reserve(num_threads_ - 1);
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_.store(true, std::memory_order_relaxed);
    epoch_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::ClaimParts(int thread_index) {
  for (int part = next_part_.fetch_add(1, std::memory_order_relaxed); part < num_parts_;
       part = next_part_.fetch_add(1, std::memory_order_relaxed)) {
    fn_(ctx_, part, thread_index);
  }
}

void ThreadPool::RunErased(int num_parts, void* ctx, ErasedFn fn) {
  // The previous region is closed and empty: nobody reads these now.
  ctx_ = ctx;
  fn_ = fn;
  num_parts_ = num_parts;
  next_part_.store(0, std::memory_order_relaxed);
  state_.store(0, std::memory_order_release);  // open, no workers inside
  {
    // The lock orders the epoch bump against a worker about to sleep.
    std::lock_guard<std::mutex> lock(mutex_);
    epoch_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  ClaimParts(0);
  // Every part is claimed. Close the region and wait for the workers inside.
  state_.fetch_or(kClosed, std::memory_order_acq_rel);
  const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
  while ((state_.load(std::memory_order_acquire) & ~kClosed) != 0) {
    _mm_pause();
    if (std::chrono::steady_clock::now() > spin_until) std::this_thread::yield();
  }
}

void ThreadPool::WorkerLoop(int thread_index) {
  uint64_t seen = 0;
  while (true) {
    uint64_t epoch = epoch_.load(std::memory_order_acquire);
    if (epoch == seen) {
      const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
      int spins = 0;
      while ((epoch = epoch_.load(std::memory_order_acquire)) == seen) {
        _mm_pause();
        if (++spins % 64 == 0 && std::chrono::steady_clock::now() > spin_until) break;
      }
      if (epoch == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return epoch_.load(std::memory_order_acquire) != seen; });
        epoch = epoch_.load(std::memory_order_acquire);
      }
    }
    seen = epoch;
    if (stopping_.load(std::memory_order_relaxed)) return;
    // Join the open region, if any; a closed one has no parts left for us.
    uint32_t state = state_.load(std::memory_order_relaxed);
    bool joined = false;
    while ((state & kClosed) == 0) {
      if (state_.compare_exchange_weak(state, state + 1, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        joined = true;
        break;
      }
    }
    if (!joined) continue;
    ClaimParts(thread_index);
    state_.fetch_sub(1, std::memory_order_release);
  }
}

}  // namespace strata::backend

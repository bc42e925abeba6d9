#include "worker/backend/cpu/thread_pool.h"

#include <atomic>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace strata::backend {
namespace {

TEST(ThreadPoolTest, RunsEveryPartExactlyOnce) {
  ThreadPool pool(3);
  ASSERT_EQ(pool.num_threads(), 3);
  for (int round = 0; round < 2000; ++round) {
    const int parts = 1 + round % 11;
    std::vector<std::atomic<int>> hits(parts);
    std::vector<std::atomic<int>> busy(3);
    pool.Run(parts, [&](int part, int thread) {
      ASSERT_GE(thread, 0);
      ASSERT_LT(thread, 3);
      // A thread runs one part at a time, so per-thread scratch is safe.
      ASSERT_EQ(busy[thread].fetch_add(1), 0);
      hits[part].fetch_add(1);
      busy[thread].fetch_sub(1);
    });
    for (int p = 0; p < parts; ++p) {
      ASSERT_EQ(hits[p].load(), 1) << "round " << round << " part " << p;
    }
  }
}

TEST(ThreadPoolTest, CallerFinishesAloneWhenWorkersAreLate) {
  ThreadPool pool(2);
  // The worker may or may not join; either way every part runs once and the
  // results are visible when Run returns.
  for (int round = 0; round < 500; ++round) {
    std::vector<int> values(64, 0);
    pool.Run(64, [&](int part, int) { values[part] = part + round; });
    for (int p = 0; p < 64; ++p) ASSERT_EQ(values[p], p + round);
    if (round % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TEST(ThreadPoolTest, ParallelForCoversTheRangeInContiguousChunks) {
  ThreadPool pool(2);
  for (int64_t count : {1, 2, 3, 17, 1000}) {
    std::vector<int> seen(count, 0);
    std::atomic<int> calls{0};
    pool.ParallelFor(count, 4, [&](int64_t begin, int64_t end, int) {
      calls.fetch_add(1);
      for (int64_t i = begin; i < end; ++i) seen[i] += 1;
    });
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(seen[i], 1) << "count " << count;
    EXPECT_EQ(calls.load(), count < 8 ? 1 : 2) << "count " << count;
  }
}

TEST(ThreadPoolTest, ParallelForDynamicCoversTheRangeInChunks) {
  ThreadPool pool(2);
  for (int64_t count : {1, 5, 64, 1001}) {
    std::vector<int> seen(count, 0);
    std::atomic<int> calls{0};
    pool.ParallelForDynamic(count, 16, [&](int64_t begin, int64_t end, int) {
      calls.fetch_add(1);
      EXPECT_EQ(begin % 16, 0);
      EXPECT_LE(end - begin, 16);
      for (int64_t i = begin; i < end; ++i) seen[i] += 1;
    });
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(seen[i], 1) << "count " << count;
    EXPECT_EQ(calls.load(), (count + 15) / 16);
  }
}

TEST(ThreadPoolTest, SleepingWorkerWakesAndTakesAPart) {
  ThreadPool pool(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the spin window
  // Each part waits (bounded) for the other to start: only a woken worker
  // can run the second part while the caller holds the first.
  std::atomic<int> started{0};
  std::set<int> threads;
  std::mutex mutex;
  pool.Run(2, [&](int, int thread) {
    started.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (started.load() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    std::lock_guard<std::mutex> lock(mutex);
    threads.insert(thread);
  });
  EXPECT_EQ(threads, (std::set<int>{0, 1}));
}

TEST(ThreadPoolTest, ZeroMeansHardwareConcurrency) {
  ThreadPool pool(0);
  EXPECT_GE(pool.num_threads(), 1);
}

}  // namespace
}  // namespace strata::backend

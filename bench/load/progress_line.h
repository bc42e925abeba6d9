// A progress bar for load runs, redrawn in place on stderr every 200 ms by
// its own thread, only when stderr is a terminal (scripts and CI logs get
// nothing). Shows requests done of the bound (or time of the time bound) and
// the output token rate so far.
//
// Thread-safety: the counters it polls must be safe to read from its thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

namespace strata::bench {

class ProgressLine {
 public:
  struct Snapshot {
    int64_t done = 0;
    int64_t output_tokens = 0;
  };

  // `total_requests` 0: no count bound; `duration_s` 0: no time bound.
  ProgressLine(std::string label, int64_t total_requests, double duration_s,
               std::function<Snapshot()> poll, bool enabled);
  ~ProgressLine();  // erases the line

 private:
  void Loop();
  void Draw(const Snapshot& snapshot, double elapsed_s) const;

  std::string label_;
  int64_t total_requests_;
  double duration_s_;
  std::function<Snapshot()> poll_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace strata::bench

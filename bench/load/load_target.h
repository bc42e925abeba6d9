// What a load run drives: something that serves one generation request at a
// time per calling thread (a gRPC server, or an engine in process), and the
// timer every target uses to measure a request the same way.
//
// Measures, per request: TTFT from sending to the first response carrying a
// token; one inter-token latency sample per token after the first (a response
// with k tokens k samples of gap / k); end to end from sending to the end of
// the stream.
//
// Thread-safety: Run() is called from many threads at once; a RequestTimer
// belongs to one request.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/load/workload.h"

namespace strata::bench {

struct RequestResult {
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string error_message;
  double ttft_ms = -1.0;  // -1: no token arrived
  std::vector<double> itl_ms;
  double e2e_ms = 0.0;
  int32_t output_tokens = 0;
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;  // as the server's usage reports
};

class RequestTimer {
 public:
  using Clock = std::chrono::steady_clock;

  RequestTimer() : start_(Clock::now()), last_(start_) {}

  // A response with `count` tokens arrived now.
  void OnTokens(int32_t count, RequestResult& result) {
    if (count <= 0) return;
    const Clock::time_point now = Clock::now();
    if (result.output_tokens == 0) {
      result.ttft_ms = Milliseconds(now - start_);
      for (int32_t i = 1; i < count; ++i) result.itl_ms.push_back(0.0);
    } else {
      const double gap = Milliseconds(now - last_) / count;
      for (int32_t i = 0; i < count; ++i) result.itl_ms.push_back(gap);
    }
    result.output_tokens += count;
    last_ = now;
  }

  // The stream ended now.
  void OnEnd(RequestResult& result) const { result.e2e_ms = Milliseconds(Clock::now() - start_); }

 private:
  static double Milliseconds(Clock::duration duration) {
    return std::chrono::duration<double, std::milli>(duration).count();
  }

  Clock::time_point start_;
  Clock::time_point last_;
};

class LoadTarget {
 public:
  virtual ~LoadTarget() = default;

  // Sends `request` (greedy unless the target was told otherwise, ignore_eos)
  // and blocks until its stream ends; errors are in the result, never thrown.
  virtual RequestResult Run(const BenchRequest& request) = 0;
};

}  // namespace strata::bench

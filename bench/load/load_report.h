// Aggregates the results of one load run and writes the JSON strata-bench
// promises to scripts:
//   {"runs": [{"concurrency": c, "requests_ok": n, "errors": {"UNAVAILABLE": n},
//              "requests_per_s": x, "output_tokens_per_s": x,
//              "ttft_ms": {"p50": x, "p90": x, "p99": x, "mean": x},
//              "itl_ms": {...}, "e2e_ms": {...}, ...}]}
// A rate run has "rate" (requests/s offered) instead of "concurrency". Also
// per run: requests_sent, duration_s, output_tokens, prompt_tokens,
// cached_tokens. Latency percentiles are over successful requests only, null
// when there is no sample; throughput counts successful requests over the
// run's wall time.
//
// Thread-safety: RunStats::Add may be called from several threads; the rest
// after the run.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bench/load/load_target.h"
#include "nlohmann/json.hpp"

namespace strata::bench {

// The p-th percentile (0..100) by linear interpolation between closest ranks;
// nullopt for no samples. Sorts `samples`.
std::optional<double> Percentile(std::vector<double>& samples, double p);

struct LatencySummary {
  std::optional<double> p50, p90, p99, mean;
};
LatencySummary Summarize(std::vector<double> samples);

struct RunSummary {
  std::optional<int32_t> concurrency;
  std::optional<double> rate;
  int64_t requests_sent = 0;
  int64_t requests_ok = 0;
  std::map<std::string, int64_t> errors;  // by status code name, e.g. "UNAVAILABLE"
  double duration_s = 0.0;
  double requests_per_s = 0.0;
  double output_tokens_per_s = 0.0;
  int64_t output_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;
  LatencySummary ttft_ms, itl_ms, e2e_ms;
  std::string first_error;  // one error message, for people
};

class RunStats {
 public:
  void Add(RequestResult result);
  int64_t completed() const;
  int64_t output_tokens() const;
  // Summary over everything added, for a run that lasted `duration_s`.
  RunSummary Summarize(double duration_s) const;

 private:
  mutable absl::Mutex mu_;
  std::vector<RequestResult> results_ ABSL_GUARDED_BY(mu_);
  int64_t output_tokens_ ABSL_GUARDED_BY(mu_) = 0;
};

nlohmann::json ToJson(const RunSummary& run);
// {"runs": [...]} plus `extra` fields at the top level.
nlohmann::json ReportJson(const std::vector<RunSummary>& runs, const nlohmann::json& extra);
// One line for people: "c=8  64 ok  0 errors  512.3 tok/s  TTFT p50 12.1 ms p99 ...".
std::string HumanLine(const RunSummary& run);

}  // namespace strata::bench

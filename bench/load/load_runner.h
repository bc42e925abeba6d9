// Runs one load run against a target: a fixed number of concurrent clients
// each sending its next request as soon as the last one ends, or requests
// arriving as a Poisson process at a fixed rate. A run ends after
// max_requests requests or, when max_duration_s is set, once that much time
// has passed: no request starts after it, those in flight finish and count.
// On a terminal, a progress bar on stderr is redrawn while the run lasts.
//
// Thread-safety: RunLoad blocks the caller and uses its own threads; the
// target must accept Run() from many threads at once.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "bench/load/load_report.h"
#include "bench/load/load_target.h"
#include "bench/load/workload.h"

namespace strata::bench {

struct RunSpec {
  // Exactly one of concurrency (>= 1) and rate (requests/s, > 0).
  std::optional<int32_t> concurrency;
  std::optional<double> rate;
  int64_t max_requests = 0;   // 0: no bound (max_duration_s must be set)
  double max_duration_s = 0;  // 0: no bound (max_requests must be set)
  // Which run of a sweep: picks the run's prompts (Workload::Make).
  uint32_t run_index = 0;
  uint64_t seed = 0;  // Poisson arrival times
  // Rate mode: most requests in flight; arrivals wait beyond it.
  int32_t max_in_flight = 1024;
  bool show_progress = true;  // only drawn when stderr is a terminal
};

// INVALID_ARGUMENT naming the flag when the spec is inconsistent.
absl::Status ValidateRunSpec(const RunSpec& spec);

// REQUIRES: ValidateRunSpec(spec).ok().
RunSummary RunLoad(LoadTarget& target, const Workload& workload, const RunSpec& spec);

}  // namespace strata::bench

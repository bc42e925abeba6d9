// Flags and the sweep shared by strata-bench (gRPC) and strata-engine-bench
// (in-process engine): the workload, the runs (--concurrency list or --rate
// list, bounded by --requests and/or --duration), the report on stdout and
// in --json.
//
// Thread-safety: used from main() only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/load/load_runner.h"
#include "bench/load/load_target.h"
#include "bench/load/workload.h"
#include "nlohmann/json.hpp"

namespace strata::bench {

struct BenchFlags {
  std::vector<int32_t> concurrency;  // a sweep; default {1, 8, 32} when no --rate
  std::vector<double> rate;          // requests/s, Poisson arrivals; one run per value
  int64_t requests = 0;              // per run; 0: see DefaultRequests
  double duration_s = 0;             // per run; 0: no time bound
  WorkloadOptions workload;
  std::string lengths = "fixed";  // or "uniform"
  float temperature = 0.0f;
  std::string json_path;
  bool no_progress = false;
};

void AddBenchFlags(CLI::App& app, BenchFlags& flags);

// Requests per run when neither --requests nor --duration is given: 4 per
// client (at least 16) for a concurrency run, 100 for a rate run.
int64_t DefaultRequests(const RunSpec& spec);

// One spec per run of the sweep, validated; applies --lengths to the workload.
absl::StatusOr<std::vector<RunSpec>> MakeRunSpecs(BenchFlags& flags);

// Runs every spec in order, prints a line per run to stdout, then writes the
// report (with `extra` fields at the top level) to --json when given.
absl::Status RunSweep(LoadTarget& target, const Workload& workload,
                      const std::vector<RunSpec>& specs, const BenchFlags& flags,
                      const nlohmann::json& extra);

// The workload options as JSON, for the report.
nlohmann::json WorkloadJson(const BenchFlags& flags);

}  // namespace strata::bench

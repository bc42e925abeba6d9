#include "bench/load/bench_cli.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "bench/load/load_report.h"

namespace strata::bench {

void AddBenchFlags(CLI::App& app, BenchFlags& flags) {
  app.add_option("--concurrency", flags.concurrency,
                 "Concurrent clients, one run per value: 1,8,32 (default when no --rate)")
      ->delimiter(',');
  app.add_option("--rate", flags.rate,
                 "Poisson arrival rate in requests/s, one run per value (instead of "
                 "--concurrency)")
      ->delimiter(',');
  app.add_option("--requests", flags.requests,
                 "Requests per run (default: 4 per client, at least 16; 100 for --rate)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--duration", flags.duration_s,
                 "Seconds per run: no request starts after it (0: no time bound)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--prompt-tokens", flags.workload.prompt_tokens,
                 "Prompt tokens of each request (after the shared prefix, if any)")
      ->capture_default_str();
  app.add_option("--max-tokens", flags.workload.max_tokens,
                 "Tokens each request generates (ignore_eos, so exactly this many)")
      ->capture_default_str();
  app.add_option("--lengths", flags.lengths,
                 "fixed: exactly --prompt-tokens/--max-tokens; uniform: each drawn from "
                 "[n/2, 3n/2]")
      ->check(CLI::IsMember({"fixed", "uniform"}))
      ->capture_default_str();
  app.add_option("--shared-prefix-groups", flags.workload.shared_prefix_groups,
                 "Groups of requests sharing a long prefix (request i is in group i mod G)")
      ->capture_default_str();
  app.add_option("--shared-prefix-tokens", flags.workload.shared_prefix_tokens,
                 "Tokens of each group's shared prefix")
      ->capture_default_str();
  app.add_option("--seed", flags.workload.seed, "Seed of prompts and arrival times")
      ->capture_default_str();
  app.add_option("--temperature", flags.temperature, "Sampling temperature (0: greedy)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--json", flags.json_path, "Write the report as JSON to this file");
  app.add_flag("--no-progress", flags.no_progress, "No progress bar, even on a terminal");
}

int64_t DefaultRequests(const RunSpec& spec) {
  if (spec.concurrency.has_value()) return std::max<int64_t>(16, 4 * *spec.concurrency);
  return 100;
}

absl::StatusOr<std::vector<RunSpec>> MakeRunSpecs(BenchFlags& flags) {
  flags.workload.uniform_lengths = flags.lengths == "uniform";
  if (!flags.concurrency.empty() && !flags.rate.empty()) {
    return absl::InvalidArgumentError("give --concurrency or --rate, not both");
  }
  if (flags.concurrency.empty() && flags.rate.empty()) flags.concurrency = {1, 8, 32};
  std::vector<RunSpec> specs;
  auto add = [&](RunSpec spec) -> absl::Status {
    spec.run_index = static_cast<uint32_t>(specs.size());
    spec.seed = flags.workload.seed;
    spec.max_duration_s = flags.duration_s;
    spec.max_requests = flags.requests;
    if (spec.max_requests == 0 && spec.max_duration_s == 0) {
      spec.max_requests = DefaultRequests(spec);
    }
    spec.show_progress = !flags.no_progress;
    if (absl::Status valid = ValidateRunSpec(spec); !valid.ok()) return valid;
    specs.push_back(spec);
    return absl::OkStatus();
  };
  for (int32_t concurrency : flags.concurrency) {
    RunSpec spec;
    spec.concurrency = concurrency;
    if (absl::Status status = add(spec); !status.ok()) return status;
  }
  for (double rate : flags.rate) {
    RunSpec spec;
    spec.rate = rate;
    if (absl::Status status = add(spec); !status.ok()) return status;
  }
  return specs;
}

nlohmann::json WorkloadJson(const BenchFlags& flags) {
  return {{"prompt_tokens", flags.workload.prompt_tokens},
          {"max_tokens", flags.workload.max_tokens},
          {"lengths", flags.lengths},
          {"shared_prefix_groups", flags.workload.shared_prefix_groups},
          {"shared_prefix_tokens", flags.workload.shared_prefix_tokens},
          {"temperature", flags.temperature},
          {"seed", flags.workload.seed}};
}

absl::Status RunSweep(LoadTarget& target, const Workload& workload,
                      const std::vector<RunSpec>& specs, const BenchFlags& flags,
                      const nlohmann::json& extra) {
  std::vector<RunSummary> runs;
  for (const RunSpec& spec : specs) {
    runs.push_back(RunLoad(target, workload, spec));
    std::printf("%s\n", HumanLine(runs.back()).c_str());
    std::fflush(stdout);
  }
  if (flags.json_path.empty()) return absl::OkStatus();
  std::ofstream file(flags.json_path);
  file << ReportJson(runs, extra).dump(2) << "\n";
  file.close();
  if (!file) {
    return absl::UnavailableError(absl::StrCat("could not write --json ", flags.json_path));
  }
  return absl::OkStatus();
}

}  // namespace strata::bench

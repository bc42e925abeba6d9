#include "bench/load/load_runner.h"

#include <atomic>
#include <chrono>
#include <list>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "bench/load/progress_line.h"

namespace strata::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration duration) { return std::chrono::duration<double>(duration).count(); }

void RunConcurrency(LoadTarget& target, const Workload& workload, const RunSpec& spec,
                    Clock::time_point start, RunStats& stats) {
  std::atomic<int64_t> next{0};
  auto client = [&] {
    while (true) {
      if (spec.max_duration_s > 0 && Seconds(Clock::now() - start) >= spec.max_duration_s) return;
      const int64_t index = next.fetch_add(1);
      if (spec.max_requests > 0 && index >= spec.max_requests) return;
      stats.Add(target.Run(workload.Make(spec.run_index, static_cast<uint64_t>(index))));
    }
  };
  std::vector<std::thread> clients;
  for (int32_t i = 0; i < *spec.concurrency; ++i) clients.emplace_back(client);
  for (std::thread& thread : clients) thread.join();
}

void RunRate(LoadTarget& target, const Workload& workload, const RunSpec& spec,
             Clock::time_point start, RunStats& stats) {
  std::mt19937_64 random(spec.seed ^ (0x9e3779b97f4a7c15ull * (spec.run_index + 1)));
  std::exponential_distribution<double> gap(*spec.rate);
  absl::Mutex mu;
  int32_t in_flight = 0;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::list<Worker> workers;
  double arrival_s = 0.0;
  for (int64_t index = 0; spec.max_requests == 0 || index < spec.max_requests; ++index) {
    arrival_s += gap(random);
    if (spec.max_duration_s > 0 && arrival_s >= spec.max_duration_s) break;
    std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(arrival_s)));
    {
      absl::MutexLock lock(&mu);
      auto below_limit = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return in_flight < spec.max_in_flight;
      };
      mu.Await(absl::Condition(&below_limit));
      ++in_flight;
    }
    // Reap finished workers so threads do not pile up.
    for (auto it = workers.begin(); it != workers.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = workers.erase(it);
      } else {
        ++it;
      }
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    BenchRequest request = workload.Make(spec.run_index, static_cast<uint64_t>(index));
    workers.push_back(
        {std::thread([&target, &stats, &mu, &in_flight, done, request = std::move(request)] {
           stats.Add(target.Run(request));
           {
             absl::MutexLock lock(&mu);
             --in_flight;
           }
           done->store(true);
         }),
         done});
  }
  for (Worker& worker : workers) worker.thread.join();
}

}  // namespace

absl::Status ValidateRunSpec(const RunSpec& spec) {
  if (spec.concurrency.has_value() == spec.rate.has_value()) {
    return absl::InvalidArgumentError("give exactly one of --concurrency and --rate");
  }
  if (spec.concurrency.has_value() && *spec.concurrency < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--concurrency values must be >= 1, got ", *spec.concurrency));
  }
  if (spec.rate.has_value() && !(*spec.rate > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--rate must be > 0, got ", *spec.rate));
  }
  if (spec.max_requests < 0 || spec.max_duration_s < 0) {
    return absl::InvalidArgumentError("--requests and --duration must be >= 0");
  }
  if (spec.max_requests == 0 && spec.max_duration_s == 0) {
    return absl::InvalidArgumentError("a run needs a bound: --requests N or --duration S");
  }
  if (spec.max_in_flight < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_in_flight must be >= 1, got ", spec.max_in_flight));
  }
  return absl::OkStatus();
}

RunSummary RunLoad(LoadTarget& target, const Workload& workload, const RunSpec& spec) {
  RunStats stats;
  const Clock::time_point start = Clock::now();
  {
    const std::string label = spec.concurrency.has_value()
                                  ? absl::StrFormat("c=%d", *spec.concurrency)
                                  : absl::StrFormat("rate=%g", *spec.rate);
    ProgressLine progress(
        label, spec.max_requests, spec.max_duration_s,
        [&stats] {
          return ProgressLine::Snapshot{stats.completed(), stats.output_tokens()};
        },
        spec.show_progress);
    if (spec.concurrency.has_value()) {
      RunConcurrency(target, workload, spec, start, stats);
    } else {
      RunRate(target, workload, spec, start, stats);
    }
  }
  RunSummary summary = stats.Summarize(Seconds(Clock::now() - start));
  summary.concurrency = spec.concurrency;
  summary.rate = spec.rate;
  return summary;
}

}  // namespace strata::bench

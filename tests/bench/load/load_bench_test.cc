// strata-bench's pieces without a server: the workload, percentiles, the
// report's JSON shape, and load runs against fake targets (concurrency
// actually reached, rate runs, bounds) and against an engine in process.
#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bench/load/bench_cli.h"
#include "bench/load/engine_target.h"
#include "bench/load/load_report.h"
#include "bench/load/load_runner.h"
#include "bench/load/workload.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_model.h"
#include "tests/fakes/fake_tokenizer.h"
#include "worker/engine/engine_factory.h"

namespace strata::bench {
namespace {

using ::testing::HasSubstr;

Workload MakeWorkload(const WorkloadOptions& options, int32_t vocab = 512) {
  absl::StatusOr<Workload> workload = Workload::Create(options, vocab);
  EXPECT_TRUE(workload.ok()) << workload.status();
  return *workload;
}

TEST(WorkloadTest, PromptsAreRandomIdsAboveTheSpecialOnesAndReproducible) {
  WorkloadOptions options;
  options.prompt_tokens = 50;
  options.max_tokens = 7;
  options.seed = 3;
  const Workload workload = MakeWorkload(options, 40);
  const BenchRequest request = workload.Make(0, 5);
  ASSERT_EQ(request.prompt_ids.size(), 50u);
  EXPECT_EQ(request.max_tokens, 7);
  EXPECT_EQ(request.group, -1);
  for (int32_t id : request.prompt_ids) {
    EXPECT_GE(id, 3);
    EXPECT_LT(id, 40);
  }
  EXPECT_EQ(workload.Make(0, 5).prompt_ids, request.prompt_ids);
  EXPECT_NE(workload.Make(0, 6).prompt_ids, request.prompt_ids);
  EXPECT_NE(workload.Make(1, 5).prompt_ids, request.prompt_ids);  // another run
  options.seed = 4;
  EXPECT_NE(MakeWorkload(options, 40).Make(0, 5).prompt_ids, request.prompt_ids);
}

TEST(WorkloadTest, SharedPrefixGroupsShareTheirPrefixOnly) {
  WorkloadOptions options;
  options.prompt_tokens = 10;
  options.shared_prefix_groups = 3;
  options.shared_prefix_tokens = 100;
  const Workload workload = MakeWorkload(options);
  const BenchRequest a = workload.Make(0, 1);
  const BenchRequest b = workload.Make(0, 4);  // same group: 4 mod 3 == 1
  const BenchRequest c = workload.Make(0, 2);
  ASSERT_EQ(a.prompt_ids.size(), 110u);
  EXPECT_EQ(a.group, 1);
  EXPECT_EQ(b.group, 1);
  EXPECT_EQ(c.group, 2);
  EXPECT_TRUE(std::equal(a.prompt_ids.begin(), a.prompt_ids.begin() + 100, b.prompt_ids.begin()));
  EXPECT_NE(std::vector<int32_t>(a.prompt_ids.begin() + 100, a.prompt_ids.end()),
            std::vector<int32_t>(b.prompt_ids.begin() + 100, b.prompt_ids.end()));
  EXPECT_FALSE(std::equal(a.prompt_ids.begin(), a.prompt_ids.begin() + 100, c.prompt_ids.begin()));
  // The next run has its own prefixes.
  const BenchRequest next_run = workload.Make(1, 1);
  EXPECT_FALSE(
      std::equal(a.prompt_ids.begin(), a.prompt_ids.begin() + 100, next_run.prompt_ids.begin()));
}

TEST(WorkloadTest, UniformLengthsStayWithinHalfToOneAndAHalf) {
  WorkloadOptions options;
  options.prompt_tokens = 20;
  options.max_tokens = 40;
  options.uniform_lengths = true;
  const Workload workload = MakeWorkload(options);
  std::set<size_t> prompt_lengths;
  for (uint64_t i = 0; i < 200; ++i) {
    const BenchRequest request = workload.Make(0, i);
    EXPECT_GE(request.prompt_ids.size(), 10u);
    EXPECT_LE(request.prompt_ids.size(), 30u);
    EXPECT_GE(request.max_tokens, 20);
    EXPECT_LE(request.max_tokens, 60);
    prompt_lengths.insert(request.prompt_ids.size());
  }
  EXPECT_GT(prompt_lengths.size(), 10u);
}

TEST(WorkloadTest, BadOptionsNameTheFlag) {
  WorkloadOptions options;
  options.prompt_tokens = 0;
  EXPECT_THAT(std::string(Workload::Create(options, 512).status().message()),
              HasSubstr("--prompt-tokens"));
  options = {};
  options.max_tokens = -1;
  EXPECT_THAT(std::string(Workload::Create(options, 512).status().message()),
              HasSubstr("--max-tokens"));
  options = {};
  options.shared_prefix_groups = 2;
  EXPECT_THAT(std::string(Workload::Create(options, 512).status().message()),
              HasSubstr("--shared-prefix-tokens"));
  EXPECT_FALSE(Workload::Create(WorkloadOptions{}, 3).ok());
}

TEST(LoadReportTest, PercentilesInterpolateBetweenRanks) {
  std::vector<double> samples = {4, 1, 3, 2, 5};
  EXPECT_DOUBLE_EQ(*Percentile(samples, 50), 3.0);
  EXPECT_DOUBLE_EQ(*Percentile(samples, 0), 1.0);
  EXPECT_DOUBLE_EQ(*Percentile(samples, 100), 5.0);
  EXPECT_DOUBLE_EQ(*Percentile(samples, 90), 4.6);
  std::vector<double> none;
  EXPECT_FALSE(Percentile(none, 50).has_value());
}

TEST(LoadReportTest, JsonHasTheDocumentedShape) {
  RunStats stats;
  for (int i = 0; i < 4; ++i) {
    RequestResult ok;
    ok.ttft_ms = 10.0 * (i + 1);
    ok.itl_ms = {1.0, 2.0};
    ok.e2e_ms = 50.0;
    ok.output_tokens = 3;
    ok.prompt_tokens = 8;
    ok.cached_tokens = 4;
    stats.Add(ok);
  }
  RequestResult failed;
  failed.code = absl::StatusCode::kUnavailable;
  failed.error_message = "no replica";
  stats.Add(failed);
  stats.Add(failed);
  RunSummary summary = stats.Summarize(2.0);
  summary.concurrency = 8;
  const nlohmann::json report = ReportJson({summary}, {{"server", "x:1"}});
  EXPECT_EQ(report["server"], "x:1");
  ASSERT_EQ(report["runs"].size(), 1u);
  const nlohmann::json& run = report["runs"][0];
  EXPECT_EQ(run["concurrency"], 8);
  EXPECT_FALSE(run.contains("rate"));
  EXPECT_EQ(run["requests_ok"], 4);
  EXPECT_EQ(run["errors"]["UNAVAILABLE"], 2);
  EXPECT_DOUBLE_EQ(run["requests_per_s"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(run["output_tokens_per_s"].get<double>(), 6.0);
  EXPECT_DOUBLE_EQ(run["ttft_ms"]["p50"].get<double>(), 25.0);
  for (const char* key : {"p50", "p90", "p99"}) {
    EXPECT_TRUE(run["ttft_ms"][key].is_number()) << key;
    EXPECT_TRUE(run["itl_ms"][key].is_number()) << key;
    EXPECT_TRUE(run["e2e_ms"][key].is_number()) << key;
  }
  EXPECT_EQ(run["cached_tokens"], 16);
  EXPECT_THAT(HumanLine(summary), HasSubstr("no replica"));
  // No successful request: latencies are null, not 0.
  RunStats empty;
  empty.Add(failed);
  const nlohmann::json none = ToJson(empty.Summarize(1.0));
  EXPECT_TRUE(none["ttft_ms"]["p50"].is_null());
}

TEST(RequestTimerTest, MeasuresFirstTokenThenGapsPerToken) {
  RequestResult result;
  RequestTimer timer;
  timer.OnTokens(0, result);  // a response with only text held back: no token yet
  EXPECT_LT(result.ttft_ms, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  timer.OnTokens(1, result);
  EXPECT_GE(result.ttft_ms, 4.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(4));
  timer.OnTokens(2, result);
  timer.OnEnd(result);
  EXPECT_EQ(result.output_tokens, 3);
  ASSERT_EQ(result.itl_ms.size(), 2u);
  EXPECT_GE(result.itl_ms[0], 1.5);
  EXPECT_DOUBLE_EQ(result.itl_ms[0], result.itl_ms[1]);
  EXPECT_GE(result.e2e_ms, result.ttft_ms);
}

// A target that sleeps a little per request and records how many requests
// were in flight at once.
class SleepyTarget final : public LoadTarget {
 public:
  RequestResult Run(const BenchRequest& request) override {
    const int now = ++in_flight_;
    int seen = max_in_flight_.load();
    while (now > seen && !max_in_flight_.compare_exchange_weak(seen, now)) {
    }
    RequestTimer timer;
    RequestResult result;
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    timer.OnTokens(request.max_tokens, result);
    timer.OnEnd(result);
    --in_flight_;
    ++calls_;
    if (request.prompt_ids[0] % 5 == 0) {
      result.code = absl::StatusCode::kResourceExhausted;
      result.error_message = "busy";
    }
    return result;
  }
  std::atomic<int> in_flight_{0}, max_in_flight_{0}, calls_{0};
};

TEST(LoadRunnerTest, ConcurrencyRunKeepsThatManyRequestsInFlight) {
  SleepyTarget target;
  WorkloadOptions options;
  options.prompt_tokens = 4;
  options.max_tokens = 3;
  RunSpec spec;
  spec.concurrency = 6;
  spec.max_requests = 60;
  spec.show_progress = false;
  const RunSummary summary = RunLoad(target, MakeWorkload(options), spec);
  EXPECT_EQ(target.calls_, 60);
  EXPECT_EQ(target.max_in_flight_, 6);
  EXPECT_EQ(summary.requests_sent, 60);
  int64_t errors = 0;
  for (const auto& [code, count] : summary.errors) {
    EXPECT_EQ(code, "RESOURCE_EXHAUSTED");
    errors += count;
  }
  EXPECT_EQ(summary.requests_ok + errors, 60);
  EXPECT_EQ(summary.output_tokens, summary.requests_ok * 3);
  EXPECT_GT(summary.output_tokens_per_s, 0.0);
}

TEST(LoadRunnerTest, DurationBoundsARunWithoutACount) {
  SleepyTarget target;
  RunSpec spec;
  spec.concurrency = 2;
  spec.max_duration_s = 0.1;
  spec.show_progress = false;
  const RunSummary summary = RunLoad(target, MakeWorkload({}), spec);
  EXPECT_GT(summary.requests_sent, 10);
  EXPECT_LT(summary.requests_sent, 200);
  EXPECT_LT(summary.duration_s, 1.0);
}

TEST(LoadRunnerTest, RateRunSendsTheRequestedCountAtAboutThatRate) {
  SleepyTarget target;
  RunSpec spec;
  spec.rate = 400.0;
  spec.max_requests = 40;
  spec.show_progress = false;
  const RunSummary summary = RunLoad(target, MakeWorkload({}), spec);
  EXPECT_EQ(summary.requests_sent, 40);
  EXPECT_EQ(summary.rate, 400.0);
  EXPECT_FALSE(summary.concurrency.has_value());
  // 40 Poisson arrivals at 400/s take about 0.1 s; allow a slow machine.
  EXPECT_GT(summary.duration_s, 0.02);
  EXPECT_LT(summary.duration_s, 2.0);
}

TEST(LoadRunnerTest, SpecsNeedExactlyOneModeAndABound) {
  RunSpec spec;
  EXPECT_FALSE(ValidateRunSpec(spec).ok());
  spec.concurrency = 1;
  EXPECT_THAT(std::string(ValidateRunSpec(spec).message()), HasSubstr("--requests"));
  spec.max_requests = 1;
  EXPECT_TRUE(ValidateRunSpec(spec).ok());
  spec.rate = 2.0;
  EXPECT_FALSE(ValidateRunSpec(spec).ok());
  spec.concurrency.reset();
  spec.rate = 0.0;
  EXPECT_THAT(std::string(ValidateRunSpec(spec).message()), HasSubstr("--rate"));
}

TEST(BenchCliTest, ConcurrencyListAndDefaultsMakeOneSpecPerRun) {
  CLI::App app;
  BenchFlags flags;
  AddBenchFlags(app, flags);
  std::vector<std::string> args = {"--concurrency", "1,8,32", "--prompt-tokens", "16",
                                   "--lengths",     "uniform"};
  std::reverse(args.begin(), args.end());
  app.parse(args);
  absl::StatusOr<std::vector<RunSpec>> specs = MakeRunSpecs(flags);
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 3u);
  EXPECT_EQ(*(*specs)[2].concurrency, 32);
  EXPECT_EQ((*specs)[2].max_requests, 128);  // 4 per client
  EXPECT_EQ((*specs)[0].max_requests, 16);
  EXPECT_EQ((*specs)[1].run_index, 1u);
  EXPECT_TRUE(flags.workload.uniform_lengths);
  EXPECT_EQ(flags.workload.prompt_tokens, 16);

  BenchFlags both;
  both.concurrency = {1};
  both.rate = {2.0};
  EXPECT_FALSE(MakeRunSpecs(both).ok());
}

TEST(EngineTargetTest, RunsTheWorkloadThroughAnEngineInProcess) {
  fakes::FakeModelOptions model_options;
  model_options.vocab_size = 64;
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine = engine::CreateEngine(
      engine::EngineOptions{}, std::make_unique<fakes::FakeModel>(model_options),
      std::make_unique<fakes::FakeTokenizer>());
  ASSERT_TRUE(engine.ok()) << engine.status();
  EngineTarget target(**engine);
  WorkloadOptions options;
  options.prompt_tokens = 12;
  options.max_tokens = 9;
  options.shared_prefix_groups = 2;
  options.shared_prefix_tokens = 40;
  RunSpec spec;
  spec.concurrency = 4;
  spec.max_requests = 24;
  spec.show_progress = false;
  const RunSummary summary = RunLoad(target, MakeWorkload(options, 64), spec);
  EXPECT_EQ(summary.requests_ok, 24);
  EXPECT_TRUE(summary.errors.empty()) << summary.first_error;
  EXPECT_EQ(summary.output_tokens, 24 * 9);  // ignore_eos: exactly max_tokens
  EXPECT_EQ(summary.prompt_tokens, 24 * 52);
  EXPECT_GT(summary.cached_tokens, 0);  // the shared prefixes hit the cache
  EXPECT_TRUE(summary.ttft_ms.p50.has_value());
}

}  // namespace
}  // namespace strata::bench

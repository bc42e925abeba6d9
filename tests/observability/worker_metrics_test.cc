// What the worker exports beyond request metrics: the engine's step
// histograms as Prometheus histograms (cumulative buckets from
// EngineStats), and strata_rank_collective_errors_total, 0 while the rank's
// communicators work and counted by op when one fails.
#include "worker/service/worker_metrics.h"

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/metrics_catalogue.h"
#include "gtest/gtest.h"
#include "parallel/in_process_communicator.h"
#include "prometheus/metric_family.h"
#include "tests/fakes/fake_model.h"
#include "tests/fakes/fake_tokenizer.h"
#include "worker/distributed/replica.h"
#include "worker/engine/engine_factory.h"

namespace strata::service {
namespace {

const prometheus::MetricFamily* FindFamily(const std::vector<prometheus::MetricFamily>& families,
                                           const std::string& name) {
  for (const prometheus::MetricFamily& family : families) {
    if (family.name == name) return &family;
  }
  return nullptr;
}

// The Prometheus histogram matches the bucket counts it was made from.
void ExpectExported(const prometheus::MetricFamily* family, const engine::HistogramCounts& counts,
                    const std::vector<double>& catalogue_buckets) {
  ASSERT_NE(family, nullptr);
  ASSERT_EQ(family->metric.size(), 1u);
  const prometheus::ClientMetric::Histogram& histogram = family->metric[0].histogram;
  ASSERT_EQ(histogram.bucket.size(), catalogue_buckets.size() + 1);
  EXPECT_EQ(histogram.sample_count, counts.count);
  EXPECT_DOUBLE_EQ(histogram.sample_sum, counts.sum);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < histogram.bucket.size(); ++i) {
    cumulative += counts.bucket_counts.empty() ? 0 : counts.bucket_counts[i];
    EXPECT_EQ(histogram.bucket[i].cumulative_count, cumulative) << "bucket " << i;
    if (i < catalogue_buckets.size()) {
      EXPECT_DOUBLE_EQ(histogram.bucket[i].upper_bound, catalogue_buckets[i]);
    } else {
      EXPECT_TRUE(std::isinf(histogram.bucket[i].upper_bound));
    }
  }
  EXPECT_EQ(histogram.bucket.back().cumulative_count, counts.count);
}

TEST(EngineStatsCollectorTest, StepHistogramsAreZeroWithTheCataloguesBucketsBeforeAnEngine) {
  EngineStatsCollector collector;
  const std::vector<prometheus::MetricFamily> families = collector.Collect();
  const engine::HistogramCounts none;
  ExpectExported(FindFamily(families, metrics::kEngineStepDuration), none,
                 metrics::StepDurationBuckets());
  ExpectExported(FindFamily(families, metrics::kEngineBatchTokens), none,
                 metrics::BatchSizeBuckets());
  ExpectExported(FindFamily(families, metrics::kEngineBatchSequences), none,
                 metrics::BatchSizeBuckets());
}

TEST(EngineStatsCollectorTest, StepHistogramsExportTheEnginesStepsCumulatively) {
  auto model = std::make_unique<fakes::FakeModel>(fakes::FakeModelOptions{});
  engine::EngineOptions options;
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine =
      engine::CreateEngine(options, std::move(model), std::make_unique<fakes::FakeTokenizer>());
  ASSERT_TRUE(engine.ok()) << engine.status();
  // Two requests of different sizes, one after the other.
  struct Run {
    std::vector<int32_t> prompt;
    int32_t max_tokens;
  };
  for (const auto& [prompt, max_tokens] :
       std::vector<Run>{{{1, 5, 6, 7, 8, 9, 10}, 3}, {{1, 11}, 6}}) {
    engine::GenerationRequest request;
    request.prompt_ids = prompt;
    request.sampling.temperature = 0.0f;
    request.stopping.max_tokens = max_tokens;
    absl::Notification done;
    ASSERT_TRUE((*engine)
                    ->Submit(request,
                             [&done](engine::GenerationOutput output) {
                               if (output.finished) done.Notify();
                             })
                    .ok());
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }
  EngineStatsCollector collector;
  collector.SetEngine(engine->get(), 4, 1);
  const engine::EngineStats stats = (*engine)->Stats();
  ASSERT_EQ(stats.steps, 3u + 6u);
  const std::vector<prometheus::MetricFamily> families = collector.Collect();
  ExpectExported(FindFamily(families, metrics::kEngineStepDuration), stats.step_seconds,
                 metrics::StepDurationBuckets());
  ExpectExported(FindFamily(families, metrics::kEngineBatchTokens), stats.step_tokens,
                 metrics::BatchSizeBuckets());
  ExpectExported(FindFamily(families, metrics::kEngineBatchSequences), stats.step_sequences,
                 metrics::BatchSizeBuckets());
  EXPECT_DOUBLE_EQ(stats.step_tokens.sum, (7 + 2) + (2 + 5));
  collector.SetEngine(nullptr, 0, 1);
  (*engine)->Shutdown();
}

// strata_rank_collective_errors_total{op, rank} as exported.
std::optional<double> CollectiveErrors(const WorkerMetrics& metrics, const std::string& op,
                                       int rank) {
  const std::vector<prometheus::MetricFamily> families = metrics.registry()->Collect();
  const prometheus::MetricFamily* family = FindFamily(families, metrics::kRankCollectiveErrors);
  if (family == nullptr) return std::nullopt;
  for (const prometheus::ClientMetric& metric : family->metric) {
    std::string metric_op, metric_rank;
    for (const prometheus::ClientMetric::Label& label : metric.label) {
      if (label.name == "op") metric_op = label.value;
      if (label.name == "rank") metric_rank = label.value;
    }
    if (metric_op == op && metric_rank == std::to_string(rank)) return metric.counter.value;
  }
  return std::nullopt;
}

parallel::GroupSpec WorldOfTwo() { return parallel::GroupSpec{"world", {0, 1}}; }

// Rank `rank`'s communicator on `world`, reporting failures to `metrics` as
// the worker does.
std::unique_ptr<distributed::FailureReportingCommunicator> Reporting(
    parallel::InProcessWorld& world, int rank, WorkerMetrics& metrics,
    std::unique_ptr<parallel::Communicator>& inner) {
  absl::StatusOr<std::unique_ptr<parallel::Communicator>> joined = world.Join(WorldOfTwo(), rank);
  EXPECT_TRUE(joined.ok()) << joined.status();
  if (!joined.ok()) return nullptr;
  inner = *std::move(joined);
  return std::make_unique<distributed::FailureReportingCommunicator>(
      *inner, [&metrics, rank](std::string_view op, const absl::Status&) {
        metrics.RecordCollectiveError(rank, op);
      });
}

TEST(CollectiveErrorsTest, EveryOpIsExportedAtZeroAndStaysZeroWhileCallsSucceed) {
  WorkerMetrics metrics;
  metrics.ExportCollectiveErrors(0);
  metrics.ExportCollectiveErrors(1);
  parallel::InProcessWorld world(2, absl::Seconds(10));
  std::unique_ptr<parallel::Communicator> inner[2];
  auto rank0 = Reporting(world, 0, metrics, inner[0]);
  auto rank1 = Reporting(world, 1, metrics, inner[1]);
  ASSERT_TRUE(rank0 && rank1);
  auto exercise = [](parallel::Communicator& c) {
    std::vector<float> data = {1.0f, 2.0f};
    float gathered[4];
    int value = 7;
    float message = 3.0f;
    absl::Status status = c.AllReduceSum(data.data(), data.size());
    if (status.ok()) status = c.AllGather(data.data(), 2, gathered);
    if (status.ok()) status = c.Broadcast(&value, sizeof(value), 0);
    if (status.ok()) {
      status = c.rank() == 0 ? c.Send(&message, sizeof(message), 1)
                             : c.Recv(&message, sizeof(message), 0);
    }
    if (status.ok()) status = c.Barrier();
    return status;
  };
  absl::Status status1;
  std::thread peer([&] { status1 = exercise(*rank1); });
  const absl::Status status0 = exercise(*rank0);
  peer.join();
  ASSERT_TRUE(status0.ok()) << status0;
  ASSERT_TRUE(status1.ok()) << status1;
  for (int rank : {0, 1}) {
    for (const char* op : metrics::kCollectiveOps) {
      EXPECT_EQ(CollectiveErrors(metrics, op, rank), 0.0) << op << " rank " << rank;
    }
  }
}

TEST(CollectiveErrorsTest, ACallThatFailsOnALostPeerCountsOnceUnderItsOp) {
  WorkerMetrics metrics;
  metrics.ExportCollectiveErrors(0);
  parallel::InProcessWorld world(2, absl::Seconds(10));
  std::unique_ptr<parallel::Communicator> inner;
  auto rank0 = Reporting(world, 0, metrics, inner);
  ASSERT_TRUE(rank0);
  world.MarkRankLostForTest(1);
  std::vector<float> data = {1.0f};
  const absl::Status status = rank0->AllReduceSum(data.data(), data.size());
  // The error passes through unchanged.
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_EQ(CollectiveErrors(metrics, metrics::kOpAllReduce, 0), 1.0);
  for (const char* op : metrics::kCollectiveOps) {
    if (std::string(op) != metrics::kOpAllReduce) {
      EXPECT_EQ(CollectiveErrors(metrics, op, 0), 0.0) << op;
    }
  }
}

TEST(CollectiveErrorsTest, ACallThatTimesOutCountsUnderItsOp) {
  WorkerMetrics metrics;
  metrics.ExportCollectiveErrors(0);
  parallel::InProcessWorld world(2, absl::Milliseconds(100));
  std::unique_ptr<parallel::Communicator> inner;
  auto rank0 = Reporting(world, 0, metrics, inner);
  ASSERT_TRUE(rank0);
  int value = 1;
  // Rank 1 never arrives.
  const absl::Status status = rank0->Broadcast(&value, sizeof(value), 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_EQ(CollectiveErrors(metrics, metrics::kOpBroadcast, 0), 1.0);
  EXPECT_EQ(CollectiveErrors(metrics, metrics::kOpRecv, 0), 0.0);
}

}  // namespace
}  // namespace strata::service

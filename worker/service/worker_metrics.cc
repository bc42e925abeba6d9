#include "worker/service/worker_metrics.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>

#include "prometheus/metric_family.h"

namespace strata::service {
namespace {

using metrics::FindMetric;
using metrics::MetricSpec;

const MetricSpec& Spec(const char* name) {
  const MetricSpec* spec = FindMetric(name);
  // Every name used here is a catalogue constant; a miss is a programming error.
  if (spec == nullptr) std::abort();
  return *spec;
}

prometheus::MetricFamily Family(const char* name, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = std::string(Spec(name).help);
  family.type = type;
  return family;
}

prometheus::MetricFamily GaugeFamily(const char* name, double value) {
  prometheus::MetricFamily family = Family(name, prometheus::MetricType::Gauge);
  prometheus::ClientMetric metric;
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
  return family;
}

prometheus::MetricFamily CounterFamily(const char* name, double value) {
  prometheus::MetricFamily family = Family(name, prometheus::MetricType::Counter);
  prometheus::ClientMetric metric;
  metric.counter.value = value;
  family.metric.push_back(std::move(metric));
  return family;
}

// A histogram family from bucket counts; the catalogue's buckets with zero
// counts when `counts` has none (no engine yet).
prometheus::MetricFamily HistogramFamily(const char* name, const engine::HistogramCounts& counts) {
  prometheus::MetricFamily family = Family(name, prometheus::MetricType::Histogram);
  prometheus::ClientMetric metric;
  const bool empty = counts.upper_bounds.empty();
  const std::vector<double>& bounds = empty ? Spec(name).buckets : counts.upper_bounds;
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds.size(); ++i) {
    if (!empty && i < counts.bucket_counts.size()) cumulative += counts.bucket_counts[i];
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < bounds.size() ? bounds[i] : std::numeric_limits<double>::infinity();
    metric.histogram.bucket.push_back(bucket);
  }
  metric.histogram.sample_count = empty ? 0 : counts.count;
  metric.histogram.sample_sum = empty ? 0.0 : counts.sum;
  family.metric.push_back(std::move(metric));
  return family;
}

template <typename Builder>
auto& Register(Builder builder, const char* name, prometheus::Registry& registry) {
  return builder.Name(name).Help(std::string(Spec(name).help)).Register(registry);
}

}  // namespace

void EngineStatsCollector::SetEngine(const engine::Engine* engine, int32_t kv_block_size,
                                     int32_t ranks) {
  kv_block_size_.store(kv_block_size);
  ranks_.store(ranks);
  engine_.store(engine);
}

std::vector<prometheus::MetricFamily> EngineStatsCollector::Collect() const {
  const engine::Engine* engine = engine_.load();
  engine::EngineStats stats;
  if (engine != nullptr) stats = engine->Stats();
  const double usage = stats.kv_blocks_total > 0 ? static_cast<double>(stats.kv_blocks_used) /
                                                       static_cast<double>(stats.kv_blocks_total)
                                                 : 0.0;
  std::vector<prometheus::MetricFamily> families = {
      GaugeFamily(metrics::kRequestsRunning, stats.running),
      GaugeFamily(metrics::kRequestsWaiting, stats.waiting),
      GaugeFamily(metrics::kKvBlocksTotal, stats.kv_blocks_total),
      GaugeFamily(metrics::kKvBlocksFree, stats.kv_blocks_free),
      GaugeFamily(metrics::kKvBlocksCached, stats.kv_blocks_cached),
      GaugeFamily(metrics::kKvCacheUsage, usage),
      CounterFamily(metrics::kPrefixCacheQueries, static_cast<double>(stats.prefix_cache_queries)),
      CounterFamily(metrics::kPrefixCacheHits, static_cast<double>(stats.prefix_cache_hits)),
      CounterFamily(metrics::kPreemptions, static_cast<double>(stats.preemptions)),
      CounterFamily(metrics::kEngineSteps, static_cast<double>(stats.steps)),
      HistogramFamily(metrics::kEngineStepDuration, stats.step_seconds),
      HistogramFamily(metrics::kEngineBatchTokens, stats.step_tokens),
      HistogramFamily(metrics::kEngineBatchSequences, stats.step_sequences),
      GaugeFamily(metrics::kModelLoaded, engine != nullptr ? 1.0 : 0.0),
      GaugeFamily(metrics::kReplicaRanksExpected, ranks_.load()),
      // Ranks of a replica run in this process today: all are ready once the
      // engine is.
      GaugeFamily(metrics::kReplicaRanksReady, engine != nullptr ? ranks_.load() : 0),
  };
  if (engine != nullptr) {
    prometheus::MetricFamily info = GaugeFamily(metrics::kKvCacheConfigInfo, 1.0);
    info.metric[0].label = {{"block_size", std::to_string(kv_block_size_.load())},
                            {"num_gpu_blocks", std::to_string(stats.kv_blocks_total)}};
    families.push_back(std::move(info));
  }
  return families;
}

void RankStepCollector::SetModel(const model::Model* model, int32_t rank) {
  std::lock_guard<std::mutex> lock(mu_);
  model_ = model;
  rank_ = rank;
  since_ = std::chrono::steady_clock::now();
}

std::vector<prometheus::MetricFamily> RankStepCollector::Collect() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (model_ == nullptr) return {};
  const model::ForwardTimings t = model_->timings();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - since_).count();
  const std::pair<const char*, double> phases[] = {
      {metrics::kPhaseCompute, std::max(0.0, t.compute_seconds())},
      {metrics::kPhaseTpCollective, t.tp_collective_seconds},
      {metrics::kPhasePpTransfer, t.pp_send_seconds},
      // Receiving activations is waiting for the previous stage.
      {metrics::kPhaseIdle, std::max(0.0, wall - t.forward_seconds + t.pp_receive_seconds)},
  };
  prometheus::MetricFamily family;
  family.name = metrics::kRankStepSeconds;
  family.help = std::string(Spec(metrics::kRankStepSeconds).help);
  family.type = prometheus::MetricType::Counter;
  for (const auto& [phase, seconds] : phases) {
    prometheus::ClientMetric metric;
    metric.label = {{"phase", phase}, {"rank", std::to_string(rank_)}};  // sorted, as families are
    metric.counter.value = seconds;
    family.metric.push_back(std::move(metric));
  }
  return {std::move(family)};
}

WorkerMetrics::WorkerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_total_(Register(prometheus::BuildCounter(), metrics::kRequestsTotal, *registry_)),
      time_to_first_token_(
          Register(prometheus::BuildHistogram(), metrics::kTimeToFirstToken, *registry_)
              .Add({}, metrics::LatencyBuckets())),
      inter_token_latency_(
          Register(prometheus::BuildHistogram(), metrics::kInterTokenLatency, *registry_)
              .Add({}, metrics::LatencyBuckets())),
      request_duration_(
          Register(prometheus::BuildHistogram(), metrics::kRequestDuration, *registry_)
              .Add({}, metrics::LatencyBuckets())),
      generation_tokens_(
          Register(prometheus::BuildCounter(), metrics::kGenerationTokens, *registry_).Add({})),
      prompt_tokens_(
          Register(prometheus::BuildCounter(), metrics::kPromptTokens, *registry_).Add({})),
      stage_replica_queue_(
          Register(prometheus::BuildHistogram(), metrics::kRequestStageDuration, *registry_)
              .Add({{"stage", metrics::kStageReplicaQueue}}, metrics::LatencyBuckets())),
      stage_prefill_(
          Register(prometheus::BuildHistogram(), metrics::kRequestStageDuration, *registry_)
              .Add({{"stage", metrics::kStagePrefill}}, metrics::LatencyBuckets())),
      stage_decode_(
          Register(prometheus::BuildHistogram(), metrics::kRequestStageDuration, *registry_)
              .Add({{"stage", metrics::kStageDecode}}, metrics::LatencyBuckets())),
      rank_weight_bytes_(Register(prometheus::BuildGauge(), metrics::kRankWeightBytes, *registry_)),
      rank_kv_cache_bytes_(
          Register(prometheus::BuildGauge(), metrics::kRankKvCacheBytes, *registry_)),
      rank_collective_errors_(
          Register(prometheus::BuildCounter(), metrics::kRankCollectiveErrors, *registry_)),
      engine_collector_(std::make_shared<EngineStatsCollector>()),
      rank_step_collector_(std::make_shared<RankStepCollector>()) {
  // Pre-create the common codes so dashboards see zeros before the first request.
  for (const char* code : {"OK", "CANCELLED", "INVALID_ARGUMENT", "OUT_OF_RANGE"}) {
    requests_total_.Add({{"code", code}});
  }
}

void WorkerMetrics::SetRankMemory(int32_t rank, uint64_t weight_bytes, uint64_t kv_cache_bytes) {
  const std::string rank_label = std::to_string(rank);
  rank_weight_bytes_.Add({{"rank", rank_label}}).Set(static_cast<double>(weight_bytes));
  rank_kv_cache_bytes_.Add({{"rank", rank_label}}).Set(static_cast<double>(kv_cache_bytes));
}

void WorkerMetrics::ExportCollectiveErrors(int32_t rank) {
  const std::string rank_label = std::to_string(rank);
  for (const char* op : metrics::kCollectiveOps) {
    rank_collective_errors_.Add({{"op", op}, {"rank", rank_label}});
  }
}

void WorkerMetrics::RecordCollectiveError(int32_t rank, std::string_view op) {
  rank_collective_errors_.Add({{"op", std::string(op)}, {"rank", std::to_string(rank)}})
      .Increment();
}

void WorkerMetrics::RecordRequestFinished(std::string_view code_name,
                                          const WorkerRequestTimes& times) {
  requests_total_.Add({{"code", std::string(code_name)}}).Increment();
  request_duration_.Observe(times.total());
  stage_replica_queue_.Observe(times.replica_queue);
  stage_prefill_.Observe(times.prefill);
  stage_decode_.Observe(times.decode);
}

}  // namespace strata::service

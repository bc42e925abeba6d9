#include "common/metrics_catalogue.h"

namespace strata::metrics {

const std::vector<MetricSpec>& Catalogue() {
  using enum MetricType;
  using enum Component;
  static const std::vector<MetricSpec>* const kCatalogue = new std::vector<MetricSpec>{
      // clang-format off
      // Router.
      {kRouterRequestsTotal, kCounter, kRouter, {"code"},
       "Generate calls finished by the router, by gRPC status code."},
      {kRouterRequestDuration, kHistogram, kRouter, {},
       "Seconds from the arrival of a Generate call at the router to its end.",
       LatencyBuckets()},
      {kRouterTimeToFirstToken, kHistogram, kRouter, {},
       "Seconds from the arrival of a Generate call at the router to the first response relayed "
       "from the backend.",
       LatencyBuckets()},
      {kRouterRequestsInFlight, kGauge, kRouter, {},
       "Generate calls being relayed now."},
      {kRouterBackendHealthy, kGauge, kRouter, {"backend"},
       "1 while the backend's health check answers SERVING, else 0."},
      {kRouterBackendInFlight, kGauge, kRouter, {"backend"},
       "Generate calls relayed to the backend now."},
      {kRouterRetriesTotal, kCounter, kRouter, {},
       "Generate calls sent again to another backend before their first token."},
      {kRouterRejectionsTotal, kCounter, kRouter, {"reason"},
       "Generate calls refused by the router without reaching a backend, by reason."},
      // Both tiers.
      {kRequestStageDuration, kHistogram, kBoth, {"stage"},
       "Seconds a Generate call spent in one stage: router_queue and stream (router), "
       "replica_queue, prefill and decode (worker). The stages add up to the router's "
       "end-to-end duration.",
       LatencyBuckets()},
      // Worker.
      {kRequestsTotal, kCounter, kWorker, {"code"},
       "Generate calls finished by the worker, by gRPC status code."},
      {kRequestDuration, kHistogram, kWorker, {},
       "Seconds from the arrival of a Generate call at the worker to its end.",
       LatencyBuckets()},
      {kTimeToFirstToken, kHistogram, kWorker, {},
       "Seconds from the arrival of a Generate call at the worker to its first generated token.",
       LatencyBuckets()},
      {kInterTokenLatency, kHistogram, kWorker, {},
       "Seconds per generated token after the first one.",
       LatencyBuckets()},
      {kGenerationTokens, kCounter, kWorker, {},
       "Tokens generated and streamed to clients."},
      {kPromptTokens, kCounter, kWorker, {},
       "Prompt tokens of finished Generate calls."},
      {kRequestsRunning, kGauge, kWorker, {},
       "Requests in the engine's running batch (GIE TotalRunningRequests)."},
      {kRequestsWaiting, kGauge, kWorker, {},
       "Requests accepted by the engine and not running: new or preempted (GIE "
       "TotalQueuedRequests)."},
      {kKvBlocksTotal, kGauge, kWorker, {},
       "KV cache blocks of the replica."},
      {kKvBlocksFree, kGauge, kWorker, {},
       "KV cache blocks not held by any request (cached prefixes included)."},
      {kKvBlocksCached, kGauge, kWorker, {},
       "Free KV cache blocks that still hold a reusable prompt prefix."},
      {kKvCacheUsage, kGauge, kWorker, {},
       "Fraction of KV cache blocks held by requests, 0..1 (GIE KVCacheUtilization)."},
      {kKvCacheConfigInfo, kGauge, kWorker, {"block_size", "num_gpu_blocks"},
       "Always 1; the labels give the KV cache's tokens per block and block count (GIE cache "
       "info)."},
      {kPrefixCacheQueries, kCounter, kWorker, {},
       "Prompt tokens looked up in the prefix cache at admission."},
      {kPrefixCacheHits, kCounter, kWorker, {},
       "Prompt tokens found in the prefix cache at admission."},
      {kPreemptions, kCounter, kWorker, {},
       "Running requests evicted to free KV cache blocks (they run again later)."},
      {kEngineSteps, kCounter, kWorker, {},
       "Forward steps the engine has run."},
      {kEngineStepDuration, kHistogram, kWorker, {},
       "Seconds of wall time per engine step, from its launch (batch built, model called) to "
       "its completion (logits sampled); pipelined steps overlap.",
       StepDurationBuckets()},
      {kEngineBatchTokens, kHistogram, kWorker, {},
       "Tokens per engine step: decode tokens plus prefill chunks.",
       BatchSizeBuckets()},
      {kEngineBatchSequences, kHistogram, kWorker, {},
       "Sequences per engine step.",
       BatchSizeBuckets()},
      {kModelLoaded, kGauge, kWorker, {},
       "1 once the model is loaded and the worker serves."},
      {kReplicaRanksExpected, kGauge, kWorker, {},
       "Ranks the replica is configured with (tp*pp)."},
      {kReplicaRanksReady, kGauge, kWorker, {},
       "Ranks of the replica that joined and are answering the leader."},
      // Per rank.
      {kRankStepSeconds, kCounter, kRank, {"rank", "phase"},
       "Seconds of engine steps by phase: compute, tp_collective, pp_transfer, idle."},
      {kRankWeightBytes, kGauge, kRank, {"rank"},
       "Bytes of model weights the rank holds."},
      {kRankKvCacheBytes, kGauge, kRank, {"rank"},
       "Bytes of KV cache the rank holds."},
      {kRankCollectiveErrors, kCounter, kRank, {"rank", "op"},
       "Failed collective or point-to-point operations of the rank, by op."},
      // clang-format on
  };
  return *kCatalogue;
}

const MetricSpec* FindMetric(std::string_view name) {
  for (const MetricSpec& spec : Catalogue()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double>* const kBuckets =
      new std::vector<double>{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,   0.25,  0.5,  1.0,
                              2.5,   5.0,    10.0,  20.0, 30.0,  60.0, 120.0, 300.0, 600.0};
  return *kBuckets;
}

const std::vector<double>& StepDurationBuckets() {
  static const std::vector<double>* const kBuckets =
      new std::vector<double>{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                              0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0, 30.0,  60.0};
  return *kBuckets;
}

const std::vector<double>& BatchSizeBuckets() {
  static const std::vector<double>* const kBuckets = [] {
    auto* buckets = new std::vector<double>;
    for (double bound = 1; bound <= 8192; bound *= 2) buckets->push_back(bound);
    return buckets;
  }();
  return *kBuckets;
}

std::string_view MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "unknown";
}

std::string_view ComponentName(Component component) {
  switch (component) {
    case Component::kRouter:
      return "router";
    case Component::kWorker:
      return "worker";
    case Component::kRank:
      return "rank";
    case Component::kBoth:
      return "both";
  }
  return "unknown";
}

}  // namespace strata::metrics

// The catalogue of Strata's Prometheus metrics: one place that defines every
// family's name, type, labels, help text and buckets. Routers and workers
// register their families from it, docs/metrics.md lists the same entries
// (a test compares the two), and the dashboards and alert rules may use only
// names found here. Names are part of the API: rename nothing without a
// deprecation note in docs/metrics.md.
//
// Labels are bounded: status codes, stages, backends, ranks, phases,
// collective ops. Never request ids, prompts or other per-request values.
//
// Thread-safety: immutable data; every function may be called from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace strata::metrics {

// Router families.
inline constexpr char kRouterRequestsTotal[] = "strata_router_requests_total";
inline constexpr char kRouterRequestDuration[] = "strata_router_request_duration_seconds";
inline constexpr char kRouterTimeToFirstToken[] = "strata_router_time_to_first_token_seconds";
inline constexpr char kRouterRequestsInFlight[] = "strata_router_requests_in_flight";
inline constexpr char kRouterBackendHealthy[] = "strata_router_backend_healthy";
inline constexpr char kRouterBackendInFlight[] = "strata_router_backend_requests_in_flight";
inline constexpr char kRouterRetriesTotal[] = "strata_router_retries_total";
inline constexpr char kRouterRejectionsTotal[] = "strata_router_rejections_total";

// Request stages, exported by routers (router_queue, stream) and workers
// (replica_queue, prefill, decode). Their means add up to the router's
// end-to-end duration.
inline constexpr char kRequestStageDuration[] = "strata_request_stage_duration_seconds";

// Worker (replica leader) families.
inline constexpr char kRequestsTotal[] = "strata_requests_total";
inline constexpr char kRequestDuration[] = "strata_request_duration_seconds";
inline constexpr char kTimeToFirstToken[] = "strata_time_to_first_token_seconds";
inline constexpr char kInterTokenLatency[] = "strata_inter_token_latency_seconds";
inline constexpr char kGenerationTokens[] = "strata_generation_tokens_total";
inline constexpr char kPromptTokens[] = "strata_prompt_tokens_total";
inline constexpr char kRequestsRunning[] = "strata_requests_running";
inline constexpr char kRequestsWaiting[] = "strata_requests_waiting";
inline constexpr char kKvBlocksTotal[] = "strata_kv_cache_blocks";
inline constexpr char kKvBlocksFree[] = "strata_kv_cache_blocks_free";
inline constexpr char kKvBlocksCached[] = "strata_kv_cache_blocks_cached";
inline constexpr char kKvCacheUsage[] = "strata_kv_cache_usage_ratio";
inline constexpr char kKvCacheConfigInfo[] = "strata_kv_cache_config_info";
inline constexpr char kPrefixCacheQueries[] = "strata_prefix_cache_queries_tokens_total";
inline constexpr char kPrefixCacheHits[] = "strata_prefix_cache_hits_tokens_total";
inline constexpr char kPreemptions[] = "strata_preemptions_total";
inline constexpr char kEngineSteps[] = "strata_engine_steps_total";
inline constexpr char kEngineStepDuration[] = "strata_engine_step_duration_seconds";
inline constexpr char kEngineBatchTokens[] = "strata_engine_batch_tokens";
inline constexpr char kEngineBatchSequences[] = "strata_engine_batch_sequences";
inline constexpr char kModelLoaded[] = "strata_model_loaded";
inline constexpr char kReplicaRanksExpected[] = "strata_replica_ranks_expected";
inline constexpr char kReplicaRanksReady[] = "strata_replica_ranks_ready";

// Per-rank families (every rank of a replica, leaders included).
inline constexpr char kRankStepSeconds[] = "strata_rank_step_seconds_total";
inline constexpr char kRankWeightBytes[] = "strata_rank_weight_bytes";
inline constexpr char kRankKvCacheBytes[] = "strata_rank_kv_cache_bytes";
inline constexpr char kRankCollectiveErrors[] = "strata_rank_collective_errors_total";

// Label values of kRequestStageDuration's "stage", in request order.
inline constexpr char kStageRouterQueue[] = "router_queue";
inline constexpr char kStageReplicaQueue[] = "replica_queue";
inline constexpr char kStagePrefill[] = "prefill";
inline constexpr char kStageDecode[] = "decode";
inline constexpr char kStageStream[] = "stream";

// Label values of kRankStepSeconds's "phase".
inline constexpr char kPhaseCompute[] = "compute";
inline constexpr char kPhaseTpCollective[] = "tp_collective";
inline constexpr char kPhasePpTransfer[] = "pp_transfer";
inline constexpr char kPhaseIdle[] = "idle";

// Label values of kRankCollectiveErrors's "op": the Communicator call that
// failed.
inline constexpr char kOpAllReduce[] = "all_reduce";
inline constexpr char kOpAllGather[] = "all_gather";
inline constexpr char kOpBroadcast[] = "broadcast";
inline constexpr char kOpSend[] = "send";
inline constexpr char kOpRecv[] = "recv";
inline constexpr char kOpBarrier[] = "barrier";
inline constexpr const char* kCollectiveOps[] = {kOpAllReduce, kOpAllGather, kOpBroadcast,
                                                 kOpSend,      kOpRecv,      kOpBarrier};

// gRPC metadata key that carries a request's id from router to leader to ranks.
inline constexpr char kRequestIdMetadataKey[] = "x-request-id";
// Trailing metadata key: seconds the worker spent on a Generate call (arrival
// to finish), so the router can tell its own share ("stream") from the worker's.
inline constexpr char kWorkerSecondsMetadataKey[] = "x-strata-worker-seconds";

enum class MetricType { kCounter, kGauge, kHistogram };
enum class Component { kRouter, kWorker, kRank, kBoth };

struct MetricSpec {
  std::string_view name;
  MetricType type;
  Component component;
  std::vector<std::string_view> labels;  // bounded sets only
  std::string_view help;
  // Histograms: the buckets' upper bounds, ascending (+Inf is implied). Empty
  // for counters and gauges.
  std::vector<double> buckets = {};
};

// Every family, in docs/metrics.md order.
const std::vector<MetricSpec>& Catalogue();

// The entry named `name`; nullptr if none.
const MetricSpec* FindMetric(std::string_view name);

// Bucket bounds in seconds for every request latency histogram: 1 ms to 10 minutes.
const std::vector<double>& LatencyBuckets();

// Bucket bounds in seconds for engine step durations: 100 us to 60 s.
const std::vector<double>& StepDurationBuckets();

// Bucket bounds for per-step batch sizes (tokens, sequences): 1, 2, 4, ..., 8192.
const std::vector<double>& BatchSizeBuckets();

std::string_view MetricTypeName(MetricType type);     // "counter", "gauge", "histogram"
std::string_view ComponentName(Component component);  // "router", "worker", "rank", "both"

}  // namespace strata::metrics

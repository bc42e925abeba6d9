// The worker's Prometheus metrics, registered from the catalogue
// (common/metrics_catalogue.h, which docs/metrics.md mirrors), and the calls
// the gRPC service makes as requests run.
//
// Request metrics live in a prometheus::Registry. Engine gauges, counters and
// histograms (running and waiting requests, KV blocks, prefix cache,
// preemptions, steps, step durations and batch sizes) are read from
// Engine::Stats() at scrape time by EngineStatsCollector, so they are never
// stale and cost nothing between scrapes.
//
// Stages: a worker observes replica_queue (arrival to first scheduling),
// prefill (to the first token) and decode (to the end) once per finished
// request, so their means add up to the worker's mean request duration.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/metrics_catalogue.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"

namespace strata::service {

// Reports the engine's gauges, counters and step histograms from
// Engine::Stats() at each scrape; zeros (and strata_model_loaded 0) while no
// engine is set.
class EngineStatsCollector final : public prometheus::Collectable {
 public:
  // REQUIRES: `engine` outlives every later Collect(), or is nullptr.
  // `kv_block_size` is the engine's tokens per KV block; `ranks` its tp*pp.
  void SetEngine(const engine::Engine* engine, int32_t kv_block_size, int32_t ranks);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::atomic<const engine::Engine*> engine_{nullptr};
  std::atomic<int32_t> kv_block_size_{0};
  std::atomic<int32_t> ranks_{1};
};

// Reports strata_rank_step_seconds_total{rank, phase} for this process's
// rank, from its model's ForwardTimings at each scrape: compute,
// tp_collective, pp_transfer (handing activations to the next stage) and idle
// (the rest of the time since SetModel: waiting for work, for a plan or for
// the previous stage's activations). The phases add up to the wall time.
class RankStepCollector final : public prometheus::Collectable {
 public:
  // REQUIRES: `model` outlives every later Collect(), or is nullptr.
  void SetModel(const model::Model* model, int32_t rank);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  mutable std::mutex mu_;
  const model::Model* model_ = nullptr;  // guarded by mu_
  int32_t rank_ = 0;
  std::chrono::steady_clock::time_point since_;
};

// Durations of one finished Generate call on the worker, in seconds. The
// three stages add up to the whole.
struct WorkerRequestTimes {
  double replica_queue = 0.0;
  double prefill = 0.0;
  double decode = 0.0;
  double total() const { return replica_queue + prefill + decode; }
};

class WorkerMetrics {
 public:
  WorkerMetrics();

  // What an Exposer registers: the request metrics and the engine gauges.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  std::shared_ptr<prometheus::Collectable> engine_collector() const { return engine_collector_; }
  std::shared_ptr<prometheus::Collectable> rank_step_collector() const {
    return rank_step_collector_;
  }

  // Makes the engine families report `engine`'s stats.
  // REQUIRES: `engine` outlives every scrape (unregister the exposer first), or nullptr.
  void SetEngine(const engine::Engine* engine, int32_t kv_block_size = 0, int32_t ranks = 1) {
    engine_collector_->SetEngine(engine, kv_block_size, ranks);
  }
  // Makes the rank step families report `model`'s timings as rank `rank`.
  // REQUIRES: `model` outlives every scrape, or nullptr.
  void SetRankModel(const model::Model* model, int32_t rank) {
    rank_step_collector_->SetModel(model, rank);
  }
  // What rank `rank` holds in memory.
  void SetRankMemory(int32_t rank, uint64_t weight_bytes, uint64_t kv_cache_bytes);
  // Exports strata_rank_collective_errors_total{rank, op} for every op of
  // metrics::kCollectiveOps, at 0 until RecordCollectiveError.
  void ExportCollectiveErrors(int32_t rank);
  // A Communicator call `op` (a metrics::kOp* value) of rank `rank` failed.
  // Cheap and non-blocking: may be called from the failing thread.
  void RecordCollectiveError(int32_t rank, std::string_view op);

  void RecordFirstToken(double seconds) { time_to_first_token_.Observe(seconds); }
  void RecordInterTokenLatency(double seconds_per_token) {
    inter_token_latency_.Observe(seconds_per_token);
  }
  void AddGeneratedTokens(size_t count) {
    generation_tokens_.Increment(static_cast<double>(count));
  }
  void AddPromptTokens(size_t count) { prompt_tokens_.Increment(static_cast<double>(count)); }
  // `code_name` is the gRPC status code's name ("OK", "CANCELLED", ...);
  // `times` the call's stage split (its total is the request duration).
  void RecordRequestFinished(std::string_view code_name, const WorkerRequestTimes& times);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_total_;
  prometheus::Histogram& time_to_first_token_;
  prometheus::Histogram& inter_token_latency_;
  prometheus::Histogram& request_duration_;
  prometheus::Counter& generation_tokens_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Histogram& stage_replica_queue_;
  prometheus::Histogram& stage_prefill_;
  prometheus::Histogram& stage_decode_;
  prometheus::Family<prometheus::Gauge>& rank_weight_bytes_;
  prometheus::Family<prometheus::Gauge>& rank_kv_cache_bytes_;
  prometheus::Family<prometheus::Counter>& rank_collective_errors_;
  std::shared_ptr<EngineStatsCollector> engine_collector_;
  std::shared_ptr<RankStepCollector> rank_step_collector_;
};

}  // namespace strata::service

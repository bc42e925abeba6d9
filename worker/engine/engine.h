// The engine API: transport-free. Submit a request, receive its outputs
// through a callback, cancel it, read stats. The gRPC service (worker/service)
// is a thin adapter around this interface; tests drive it directly.
//
// The implementation is BatchingEngine (batching_engine.h); CreateEngine
// (engine_factory.h) builds one from a model folder.
//
// Thread-safety: all methods may be called from any thread. Output callbacks
// run on the engine's step thread and must not block; they may call Submit,
// Cancel and Stats, but not Shutdown (it joins the step thread).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "worker/engine/request.h"

namespace strata::tokenizer {
class Tokenizer;
}
namespace strata::model {
struct ModelConfig;
}

namespace strata::engine {

// Observations of one quantity as bucket counts: what a Prometheus histogram
// holds, without the exporter (the engine stays free of it).
struct HistogramCounts {
  std::vector<double> upper_bounds;     // ascending; a last bucket above them is implied
  std::vector<uint64_t> bucket_counts;  // [upper_bounds.size() + 1], per bucket, not cumulative
  uint64_t count = 0;
  double sum = 0.0;

  HistogramCounts() = default;
  explicit HistogramCounts(std::vector<double> bounds)
      : upper_bounds(std::move(bounds)), bucket_counts(upper_bounds.size() + 1, 0) {}

  // Counts `value` in the first bucket whose bound is >= value (Prometheus' "le").
  void Observe(double value) {
    size_t bucket = 0;
    while (bucket < upper_bounds.size() && value > upper_bounds[bucket]) ++bucket;
    ++bucket_counts[bucket];
    ++count;
    sum += value;
  }
};

// A snapshot. A request's resources are released, and these counts updated,
// before its last output is delivered.
struct EngineStats {
  int32_t running = 0;  // sequences in the running batch
  int32_t waiting = 0;  // accepted, not running (new or preempted)
  // KV cache blocks: used (held by sequences) + free == total; cached blocks
  // are free ones that still hold a reusable prompt prefix.
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_free = 0;
  int32_t kv_blocks_used = 0;
  int32_t kv_blocks_cached = 0;
  uint64_t requests_finished = 0;
  uint64_t prompt_tokens = 0;     // prompt tokens run through the model (cached ones not)
  uint64_t generated_tokens = 0;  // generated so far, all requests
  uint64_t steps = 0;             // forward steps run
  uint64_t preemptions = 0;       // sequences evicted to free KV blocks
  // Prefix cache, in tokens: looked up at admissions, and found.
  uint64_t prefix_cache_queries = 0;
  uint64_t prefix_cache_hits = 0;
  uint64_t cached_tokens = 0;  // sum of Usage.cached_tokens of finished requests
  // A compact summary of the prompt prefixes the KV cache holds, for
  // cache-aware routing (replica.proto's LoadReport.prefix_hashes): the chain
  // hashes (KvBlockManager::HashBlock) of registered blocks, most recently
  // used first, at most KvBlockManager::kMaxReportedPrefixHashes. Empty when
  // the engine does not report them.
  std::vector<uint64_t> prefix_block_hashes;
  // Per engine step, with the catalogue's buckets (common/metrics_catalogue.h;
  // empty bounds when the engine does not report them): its wall time from
  // launch to completion, observed as each step completes (failed ones
  // included), and its size, observed as it is launched (so their count is
  // `steps`).
  HistogramCounts step_seconds;
  HistogramCounts step_tokens;
  HistogramCounts step_sequences;
};

class Engine {
 public:
  using OutputCallback = std::function<void(GenerationOutput)>;

  virtual ~Engine() = default;

  // Validates and enqueues. Errors (returned, callback never called):
  // INVALID_ARGUMENT naming the field (max_tokens <= 0, temperature NaN, inf
  // or < 0, top_p outside (0, 1], min_p outside [0, 1], top_k < 0,
  // repetition_penalty <= 0, presence/frequency_penalty outside [-2, 2],
  // top_logprobs outside [0, 20], an empty stop string, empty prompt, ids
  // outside the vocabulary), OUT_OF_RANGE when the prompt leaves no room in
  // the context (max_position_embeddings), RESOURCE_EXHAUSTED when prompt +
  // max_tokens can never fit the whole KV cache, ALREADY_EXISTS for a request
  // id in flight, UNAVAILABLE when the engine is shutting down. A request
  // whose deadline passes ends with an output whose error is
  // DEADLINE_EXCEEDED.
  // max_tokens is clamped to the context left (unset: all of it).
  // On OK, `on_output` is called one or more times; the last call has
  // finished == true.
  virtual absl::Status Submit(GenerationRequest request, OutputCallback on_output) = 0;

  // Stops a request; its last output has finish_reason kCancelled. Unknown or
  // finished ids are ignored. Resources are freed before the next step.
  virtual void Cancel(std::string_view request_id) = 0;

  virtual EngineStats Stats() const = 0;

  virtual const tokenizer::Tokenizer& tokenizer() const = 0;
  virtual const model::ModelConfig& model_config() const = 0;

  // Stops the step thread; requests still in flight finish as cancelled.
  virtual void Shutdown() = 0;
};

}  // namespace strata::engine

// LoadTarget over an engine in this process (no gRPC): measures what the
// engine itself delivers, with every engine option at hand (prefix caching,
// chunked prefill, KV pool size), for comparisons a worker's flags may not
// expose yet. Times are taken in the output callback, on the step thread.
//
// Thread-safety: Run() may be called from many threads at once.
#pragma once

#include <atomic>
#include <cstdint>

#include "bench/load/load_target.h"
#include "worker/engine/engine.h"

namespace strata::bench {

class EngineTarget final : public LoadTarget {
 public:
  // `engine` must outlive the target.
  explicit EngineTarget(engine::Engine& engine, float temperature = 0.0f)
      : engine_(engine), temperature_(temperature) {}

  RequestResult Run(const BenchRequest& request) override;

 private:
  engine::Engine& engine_;
  float temperature_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace strata::bench

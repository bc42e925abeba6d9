// The worker (replica leader) side of strata.v1.Replica: WatchLoad streams
// the engine's load to every router that subscribes. A report goes out at
// once, then whenever the load changes (waiting, running, KV blocks in use,
// the prefix hashes held; checked every `poll_interval`) and at least every
// `interval_ms` the router asked for. Until AttachEngine the call answers
// UNAVAILABLE "model is still loading" (routers retry).
//
// Each stream is a reactor; one poll thread per service looks at the load
// for all of them, so no gRPC thread ever blocks. Stop() ends every stream
// (call it before the server shuts down and before the engine goes away).
//
// Thread-safety: gRPC calls WatchLoad from its threads; AttachEngine and Stop
// may run concurrently with it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "strata/v1/replica.grpc.pb.h"
#include "worker/engine/engine.h"

namespace strata::service {

// The report for `stats` (prefix hashes truncated to `max_prefix_hashes`).
v1::LoadReport LoadReportFromStats(const engine::EngineStats& stats, int32_t block_size,
                                   int32_t max_prefix_hashes);

class ReplicaService final : public v1::Replica::CallbackService {
 public:
  struct Options {
    int32_t block_size = 16;  // the engine's KV block size (tokens)
    std::chrono::milliseconds poll_interval{20};
    int32_t default_max_prefix_hashes = 4096;
  };

  explicit ReplicaService(Options options);
  ~ReplicaService() override;  // Stop()s

  // Starts reporting `engine`. REQUIRES: called at most once; `engine`
  // outlives every stream (Stop() first).
  void AttachEngine(engine::Engine* engine);
  // Ends every stream and refuses new ones; returns once all are done.
  void Stop();

  grpc::ServerWriteReactor<v1::LoadReport>* WatchLoad(grpc::CallbackServerContext* context,
                                                      const v1::WatchLoadRequest* request) override;

 private:
  class LoadStream;

  engine::Engine* engine() const { return engine_.load(std::memory_order_acquire); }
  void Unregister(LoadStream* stream);
  void PollLoop();

  const Options options_;
  std::atomic<engine::Engine*> engine_{nullptr};

  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable streams_done_;
  bool stopping_ = false;          // guarded by mu_
  std::set<LoadStream*> streams_;  // guarded by mu_
  std::thread poll_thread_;        // last: starts in the constructor
};

}  // namespace strata::service

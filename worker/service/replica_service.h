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
// Drain (a router, or an operator, asks the leader to drain) is answered by a
// handler the process installs (SetDrainHandler): the process owns shutdown,
// this service only carries the request to it. Without a handler Drain answers
// UNIMPLEMENTED. Stop() also waits until every Drain call being answered has
// sent its answer, so a process that shuts its server down right after Stop()
// (as a drain does) never cuts off the answer to the request that started it.
//
// Thread-safety: gRPC calls WatchLoad and Drain from its threads;
// AttachEngine, SetDrainHandler and Stop may run concurrently with them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "strata/v1/replica.grpc.pb.h"
#include "worker/engine/engine.h"

namespace strata::service {

// The report for `stats` (prefix hashes truncated to `max_prefix_hashes`).
v1::LoadReport LoadReportFromStats(const engine::EngineStats& stats, int32_t block_size,
                                   int32_t max_prefix_hashes);

// A drain request as the leader's handler sees it.
struct DrainRequestInfo {
  std::string reason;        // free text from the request
  std::string requested_by;  // who says it asks (e.g. "router HOST:PORT"); may be empty
  std::string peer;          // the caller's network address, as gRPC names it
};

// What the handler answers: the DrainResponse fields.
struct DrainOutcome {
  int32_t generate_calls_in_flight = 0;
  bool already_draining = false;
  double drain_timeout_seconds = 0.0;
};

class ReplicaService final : public v1::Replica::CallbackService {
 public:
  // Starts the drain (or notes a repeated request) and returns at once; it
  // must not wait for the drain to finish. Runs on a gRPC thread.
  using DrainHandler = std::function<DrainOutcome(const DrainRequestInfo& request)>;

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
  // Ends every stream and refuses new ones; returns once all are done and
  // every Drain call in progress has been answered.
  void Stop();

  // Installs what answers Drain. REQUIRES: `handler` stays callable as long
  // as the server may call Drain.
  void SetDrainHandler(DrainHandler handler);

  grpc::ServerWriteReactor<v1::LoadReport>* WatchLoad(grpc::CallbackServerContext* context,
                                                      const v1::WatchLoadRequest* request) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;

 private:
  class LoadStream;
  class DrainCall;

  engine::Engine* engine() const { return engine_.load(std::memory_order_acquire); }
  void Unregister(LoadStream* stream);
  void DrainCallDone();
  void PollLoop();

  const Options options_;
  std::atomic<engine::Engine*> engine_{nullptr};

  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable streams_done_;  // streams_ empty and no drain_calls_
  bool stopping_ = false;                 // guarded by mu_
  std::set<LoadStream*> streams_;         // guarded by mu_
  int32_t drain_calls_ = 0;               // guarded by mu_; Drain calls not yet done
  DrainHandler drain_handler_;            // guarded by mu_
  std::thread poll_thread_;               // last: starts in the constructor
};

}  // namespace strata::service

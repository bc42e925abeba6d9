// One backend (a replica leader) as the router sees it: its address, a
// channel that reconnects quickly, stubs, and what the router knows of its
// state: health (from grpc.health.v1), passive ejection (from the outcome of
// the calls relayed to it), the calls in flight, and the last load report.
//
// The channel's reconnect backoff is capped at one second (gRPC's default
// grows to two minutes), so a worker that starts after the router, or
// restarts, is used within a second of serving.
//
// Passive ejection: `eject_after` consecutive failed calls (UNAVAILABLE: the
// backend could not be reached or refused the call) eject the backend for
// base_ejection * 2^(ejections - 1), capped at max_ejection. When that time is
// over the backend is half-open: one call at a time may go to it; a success
// closes it again, a failure ejects it for longer. A backend whose health is
// NOT_SERVING gets no new calls at all.
//
// Draining (RouterAdmin/DrainBackend): a drained backend gets no new calls
// from the moment it is drained, before its own health turns NOT_SERVING. A
// drained backend does not come back; a new process at the same address does:
// once the backend has been seen down (NOT_SERVING or unreachable) after the
// drain, its next SERVING clears the draining state.
//
// Backends are shared (std::shared_ptr): a backend removed by discovery stays
// alive until the last call relayed to it ends.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/inference.grpc.pb.h"
#include "strata/v1/replica.grpc.pb.h"

namespace prometheus {
class Gauge;
}

namespace strata::router {

class RouterMetrics;

// The last load report of a backend (replica.proto), as the balancers read it.
struct BackendLoad {
  bool reported = false;  // false until the first report arrives
  int32_t waiting = 0;
  int32_t running = 0;
  double kv_usage = 0.0;   // used KV blocks / total, [0, 1]
  int32_t block_size = 0;  // tokens per KV block (for prefix hashes)
  // Chain hashes (KvBlockManager::HashBlock) of the prefix blocks the replica
  // holds, sorted ascending for binary search.
  std::shared_ptr<const std::vector<uint64_t>> prefix_hashes;
};

struct EjectionPolicy {
  int32_t eject_after = 3;  // consecutive failures
  std::chrono::milliseconds base_ejection{1000};
  std::chrono::milliseconds max_ejection{30000};
};

class Backend {
 public:
  using Clock = std::chrono::steady_clock;

  // `metrics` may be null; when set it outlives the backend. Calls are spread
  // over `channels` HTTP/2 connections (one connection serialises large
  // prompts behind each other).
  Backend(std::string address, RouterMetrics* metrics, EjectionPolicy ejection = {},
          int channels = 2);
  ~Backend();

  const std::string& address() const { return address_; }
  // A stub on one of the backend's connections, in turn.
  v1::Inference::Stub& inference() {
    return *inference_[next_channel_.fetch_add(1, std::memory_order_relaxed) % inference_.size()];
  }
  // A byte-level stub on one of the backend's connections, in turn: Generate
  // calls are relayed as the bytes the client sent (no re-serialising).
  grpc::GenericStub& generic() {
    return *generic_[next_channel_.fetch_add(1, std::memory_order_relaxed) % generic_.size()];
  }
  grpc::health::v1::Health::Stub& health() { return *health_; }
  v1::Replica::Stub& replica() { return *replica_; }

  bool healthy() const { return healthy_.load(); }
  void SetHealthy(bool healthy);

  // Stops new calls to this backend (see the header comment); returns whether
  // it was draining already.
  bool StartDraining();
  bool draining() const;

  // Whether a new call may go to this backend now: healthy, not draining, and
  // not ejected (or half-open with no probe call in flight).
  bool Available(Clock::time_point now) const;
  bool ejected() const;

  // A call is about to be relayed to this backend (counts in flight). When
  // the backend is half-open the call is its probe: returns true.
  bool CallStarted();
  // The call ended. `backend_failed`: it ended UNAVAILABLE from the backend
  // side (not a client cancel or deadline); counts toward ejection.
  // `was_probe`: what CallStarted returned. While ejected, only the probe's
  // outcome counts (calls started before the ejection may still fail).
  void CallFinished(bool backend_failed, bool was_probe);
  int32_t in_flight() const { return in_flight_.load(); }

  void SetLoad(BackendLoad load);
  BackendLoad Load() const;

 private:
  const std::string address_;
  const EjectionPolicy ejection_policy_;
  RouterMetrics* const metrics_;
  std::vector<std::unique_ptr<v1::Inference::Stub>> inference_;  // one per connection
  std::vector<std::unique_ptr<grpc::GenericStub>> generic_;      // one per connection
  std::atomic<uint32_t> next_channel_{0};
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<v1::Replica::Stub> replica_;
  std::atomic<bool> healthy_{false};
  std::atomic<int32_t> in_flight_{0};
  prometheus::Gauge* healthy_gauge_ = nullptr;
  prometheus::Gauge* in_flight_gauge_ = nullptr;

  mutable std::mutex mu_;
  int32_t consecutive_failures_ = 0;        // guarded by mu_
  int32_t ejections_ = 0;                   // guarded by mu_; in a row, reset by a success
  Clock::time_point ejected_until_{};       // guarded by mu_; past: not ejected or half-open
  bool half_open_probe_in_flight_ = false;  // guarded by mu_
  bool draining_ = false;                   // guarded by mu_
  bool down_since_drain_ = false;           // guarded by mu_; seen not healthy while draining
  BackendLoad load_;                        // guarded by mu_
};

}  // namespace strata::router

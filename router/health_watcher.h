// Follows a backend's grpc.health.v1 status for the Inference service with a
// Watch stream, re-opened (100 ms, doubling to 1 s) whenever it breaks; a
// broken stream counts as not serving. Each change is reported to a callback.
//
// Thread-safety: Start and Stop from one thread. The callback runs on a gRPC
// thread (reading the Watch stream) or on the watcher's own thread (when the
// stream breaks), never on two at once.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "router/backend.h"

namespace strata::router {

class HealthWatcher {
 public:
  using OnChange = std::function<void(bool serving)>;

  // `backend` outlives the watcher.
  HealthWatcher(Backend& backend, OnChange on_change);
  ~HealthWatcher();  // Stop()s

  void Start();
  // Cancels the Watch in progress and joins the thread. Idempotent.
  void Stop();

 private:
  void Run();
  // Watches until the stream breaks or Stop; returns whether it ever saw SERVING.
  bool WatchOnce();
  void Report(bool serving);

  Backend& backend_;
  OnChange on_change_;
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable stop_requested_;
  bool stopping_ = false;                   // guarded by mu_
  grpc::ClientContext* current_ = nullptr;  // guarded by mu_; the Watch in progress
  // Touched by one stream's reader at a time, then by the watcher thread
  // after that stream has ended.
  bool reported_ = false;
  bool last_serving_ = false;
};

}  // namespace strata::router

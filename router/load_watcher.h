// Follows a backend's load reports (strata.v1.Replica/WatchLoad) and stores
// each one in the Backend for the balancers. The stream is re-opened when it
// breaks (100 ms doubling to 1 s; 5 s when the backend does not serve the
// Replica service, e.g. an older worker). A broken stream clears the load, so
// a stale report never steers traffic.
//
// Thread-safety: Start and Stop from one thread; reports are stored from a
// gRPC thread reading the stream.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "router/backend.h"

namespace strata::router {

class LoadWatcher {
 public:
  // `backend` outlives the watcher.
  explicit LoadWatcher(Backend& backend);
  ~LoadWatcher();  // Stop()s

  void Start();
  // Cancels the stream in progress and joins the thread. Idempotent.
  void Stop();

 private:
  void Run();
  // Reads reports until the stream breaks or Stop; returns its final status.
  // Sets *got_report when at least one report arrived.
  grpc::Status WatchOnce(bool* got_report);

  Backend& backend_;
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable stop_requested_;
  bool stopping_ = false;                   // guarded by mu_
  grpc::ClientContext* current_ = nullptr;  // guarded by mu_; the stream in progress
};

// The load a report describes, with its prefix hashes sorted for lookup.
BackendLoad LoadFromReport(const v1::LoadReport& report);

}  // namespace strata::router

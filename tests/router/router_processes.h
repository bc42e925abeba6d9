// Real strata-worker and strata-router processes for the router's
// integration tests (127.0.0.1, always reaped), and a client that runs many
// Generate streams at once and records how each ended.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/inference.grpc.pb.h"
#include "tests/integration/child_process.h"
#include "tests/integration/test_servers.h"

namespace strata::router::testing {

// A worker on the bundled model listening on `listen` ("127.0.0.1:0" for any
// port), one kernel thread; returns once it prints its addresses.
absl::StatusOr<strata::testing::ServerProcess> StartWorker(const std::string& listen,
                                                           const std::string& name,
                                                           const std::string& log_dir,
                                                           std::vector<std::string> extra = {});

// strata-router with `flags` (plus --listen/--metrics-listen on port 0);
// returns once it prints its addresses.
absl::StatusOr<strata::testing::ServerProcess> StartRouter(std::vector<std::string> flags,
                                                           const std::string& log_dir,
                                                           const std::string& name = "router");

// The value of `series` at a server's /metrics; nullopt when unreachable or absent.
std::optional<double> ScrapeMetric(const strata::testing::ServerProcess& server,
                                   const std::string& series);

// How one stream ended.
struct StreamResult {
  grpc::Status status;
  int responses = 0;
  bool finished = false;  // the last response carried a finish reason
  double seconds = 0.0;   // start to end
};

// Runs `count` Generate streams on `threads` threads against `address`.
// `cancel_after(i)` >= 0 cancels stream i after that many responses.
std::vector<StreamResult> RunStreams(const std::string& address, int count, int threads,
                                     const std::function<v1::GenerateRequest(int)>& request_of,
                                     std::chrono::milliseconds deadline,
                                     const std::function<int(int)>& cancel_after = nullptr,
                                     std::atomic<int>* started = nullptr);

// A request for the bundled model: `max_tokens` tokens of a short story.
v1::GenerateRequest StoryRequest(int max_tokens);

// Polls `condition` every 10 ms until it holds (true) or `timeout` passes
// (its last value).
template <typename Condition>
bool WaitFor(Condition condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

}  // namespace strata::router::testing

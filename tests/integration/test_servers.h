// Strata's own processes for integration tests: a worker and a router started
// from the build tree on 127.0.0.1 with port 0, plus small probes (health,
// reflection, /metrics over HTTP).
//
// Thread-safety: one thread per object.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpc/health/v1/health.pb.h"
#include "tests/integration/child_process.h"

namespace strata::testing {

// Paths of the binaries in the build tree.
std::string WorkerBinary();
std::string RouterBinary();
std::string CliBinary();

struct ServerProcess {
  std::unique_ptr<ChildProcess> process;
  std::string address;          // gRPC HOST:PORT
  std::string metrics_address;  // HOST:PORT of /metrics
};

// Starts strata-worker on `model_dir` with `extra_flags` and returns once it
// prints its addresses (the model may still be loading).
absl::StatusOr<ServerProcess> LaunchWorker(const std::string& model_dir,
                                           const std::vector<std::string>& extra_flags,
                                           const std::string& log_dir);
// Starts strata-router in front of `backend` and returns once it prints its addresses.
absl::StatusOr<ServerProcess> LaunchRouter(const std::string& backend, const std::string& log_dir);

// grpc.health.v1 Check of `service` at `address`; UNKNOWN when unreachable.
grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(const std::string& address,
                                                                 const std::string& service);
// Polls health until SERVING; an error naming the server after `timeout`.
absl::Status WaitUntilServing(const ServerProcess& server,
                              std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Services listed by gRPC server reflection at `address`.
absl::StatusOr<std::vector<std::string>> ReflectedServices(const std::string& address);

// Body of GET http://address/path; an error unless the status is 200.
absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path);

// The value of the first sample whose line starts with `series` (e.g.
// `strata_requests_running` or `strata_requests_total{code="OK"}`) in a
// Prometheus text exposition; nullopt when absent.
std::optional<double> MetricValue(const std::string& exposition, const std::string& series);

}  // namespace strata::testing

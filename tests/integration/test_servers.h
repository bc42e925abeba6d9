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
// `name` names its log files in `log_dir`.
absl::StatusOr<ServerProcess> LaunchWorker(const std::string& model_dir,
                                           const std::vector<std::string>& extra_flags,
                                           const std::string& log_dir,
                                           const std::string& name = "worker");

// A TCP port of 127.0.0.1 that was free a moment ago (for an address a
// process must be told in advance, such as a replica leader's store).
int FreePort();

// The ranks of one replica, rank order (ranks[0] is the leader).
struct ReplicaProcesses {
  std::vector<ServerProcess> ranks;
  std::string leader_store;  // --leader-address given to every rank
};

// Starts the tp * pp ranks of one replica on `model_dir` (highest rank first,
// to show that order does not matter), each with `extra_flags`; returns once
// every rank printed its addresses. Logs: <log_dir>/rank<k>.{stdout,stderr}.
absl::StatusOr<ReplicaProcesses> LaunchReplica(const std::string& model_dir, int tp, int pp,
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

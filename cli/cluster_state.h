// The record of a local cluster started by `strata cluster up`: which
// processes it runs, their pids and addresses, kept as JSON in
// STATE_DIR/cluster.json so that `strata cluster status` and `down`, run
// later from any shell, find them. Logs live in STATE_DIR/logs/.
//
// The file is rewritten whole (to a temporary file, then renamed) after each
// process starts, so a CLI killed half-way through start-up still leaves a
// record that `down` can clean up from.
//
// Thread-safety: plain values and functions.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace strata::cli {

enum class ProcessRole { kRouter, kWorker };

struct ClusterProcess {
  ProcessRole role = ProcessRole::kWorker;
  int replica = -1;  // workers only: 0 .. replicas-1
  int rank = -1;     // workers only: rank within the replica, 0 is the leader
  pid_t pid = -1;
  uint64_t start_time = 0;      // see cluster_processes.h: tells a reused pid apart
  std::string address;          // gRPC HOST:PORT; "" until the process is ready
  std::string metrics_address;  // HOST:PORT of /metrics; "" until ready
  std::string log_file;
  std::string ready_file;

  // "router" or "worker 1.3" (replica 1, rank 3): for messages and log names.
  std::string Name() const;
};

struct ClusterState {
  std::string model_dir;
  int replicas = 0;
  int tp = 1;
  int pp = 1;
  bool detached = false;
  pid_t owner_pid = -1;  // the `strata cluster up` serving in the foreground; -1 when detached
  std::string router_address;  // "" until the router is ready
  std::vector<ClusterProcess> processes;
};

std::string ClusterStateFile(const std::string& state_dir);
std::string ClusterLogDir(const std::string& state_dir);

absl::Status SaveClusterState(const std::string& state_dir, const ClusterState& state);
// NOT_FOUND naming the folder when there is no state there; INVALID_ARGUMENT
// naming the file when it cannot be parsed.
absl::StatusOr<ClusterState> LoadClusterState(const std::string& state_dir);
absl::Status RemoveClusterState(const std::string& state_dir);

}  // namespace strata::cli

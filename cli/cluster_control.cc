#include "cli/cluster_control.h"

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/cluster_processes.h"
#include "cli/cluster_state.h"
#include "cli/commands.h"
#include "cli/inference_client.h"
#include "nlohmann/json.hpp"

namespace strata::cli {

bool IsServing(const std::string& address, std::chrono::milliseconds timeout) {
  if (address.empty()) return false;
  InferenceClient client(address, timeout);
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> status =
      client.CheckHealth("");
  return status.ok() && *status == grpc::health::v1::HealthCheckResponse::SERVING;
}

int RunClusterStatus(const std::string& state_dir, bool json) {
  absl::StatusOr<ClusterState> state = LoadClusterState(state_dir);
  if (!state.ok()) return PrintError(state.status());
  nlohmann::json processes = nlohmann::json::array();
  std::vector<std::string> lines;
  for (const ClusterProcess& process : state->processes) {
    const bool alive = IsProcessAlive(process.pid, process.start_time);
    const bool healthy = alive && IsServing(process.address);
    const std::string role = process.role == ProcessRole::kRouter ? "router" : "worker";
    nlohmann::json entry;
    entry["role"] = role;
    if (process.role == ProcessRole::kWorker) {
      entry["replica"] = process.replica;
      entry["rank"] = process.rank;
    }
    entry["pid"] = process.pid;
    entry["address"] = process.address;
    entry["metrics_address"] = process.metrics_address;
    entry["healthy"] = healthy;
    processes.push_back(std::move(entry));
    const std::string replica =
        process.role == ProcessRole::kWorker ? std::to_string(process.replica) : "-";
    const std::string rank =
        process.role == ProcessRole::kWorker ? std::to_string(process.rank) : "-";
    const char* condition = healthy ? "healthy" : alive ? "NOT SERVING" : "GONE";
    char line[512];
    std::snprintf(
        line, sizeof(line), "%-7s %-7s %-4s %-8d %-21s %-21s %s", role.c_str(), replica.c_str(),
        rank.c_str(), process.pid, process.address.empty() ? "-" : process.address.c_str(),
        process.metrics_address.empty() ? "-" : process.metrics_address.c_str(), condition);
    lines.push_back(line);
  }
  if (json) {
    std::printf("%s\n", JsonLine({{"processes", std::move(processes)}}).c_str());
    return 0;
  }
  std::printf(
      "model %s, %d replica(s) of tp %d x pp %d, router %s%s\n", state->model_dir.c_str(),
      state->replicas, state->tp, state->pp,
      state->router_address.empty() ? "(not ready)" : state->router_address.c_str(),
      state->detached ? "" : absl::StrCat(", served by strata pid ", state->owner_pid).c_str());
  std::printf("%-7s %-7s %-4s %-8s %-21s %-21s %s\n", "ROLE", "REPLICA", "RANK", "PID", "ADDRESS",
              "METRICS", "STATE");
  for (const std::string& line : lines) std::printf("%s\n", line.c_str());
  return 0;
}

int RunClusterDown(const std::string& state_dir, std::chrono::milliseconds grace) {
  absl::StatusOr<ClusterState> state = LoadClusterState(state_dir);
  if (!state.ok()) return PrintError(state.status());
  std::vector<ProcessToStop> processes;
  int alive = 0;
  for (const ClusterProcess& process : state->processes) {
    processes.push_back({process.pid, process.start_time});
    if (IsProcessAlive(process.pid, process.start_time)) ++alive;
  }
  const int killed = StopProcesses(processes, grace);
  if (absl::Status status = RemoveClusterState(state_dir); !status.ok()) return PrintError(status);
  std::printf("strata cluster: stopped %d of %zu process(es)", alive, processes.size());
  if (killed > 0)
    std::printf(", %d killed after the %lld ms grace period", killed,
                static_cast<long long>(grace.count()));
  std::printf("; logs stay in %s\n", ClusterLogDir(state_dir).c_str());
  return 0;
}

}  // namespace strata::cli

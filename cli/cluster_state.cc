#include "cli/cluster_state.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "common/server_process.h"
#include "nlohmann/json.hpp"

namespace strata::cli {
namespace {

constexpr int kFormatVersion = 1;

nlohmann::json ProcessJson(const ClusterProcess& process) {
  nlohmann::json json{{"role", process.role == ProcessRole::kRouter ? "router" : "worker"},
                      {"pid", process.pid},
                      {"start_time", process.start_time},
                      {"address", process.address},
                      {"metrics_address", process.metrics_address},
                      {"log_file", process.log_file},
                      {"ready_file", process.ready_file}};
  if (process.role == ProcessRole::kWorker) {
    json["replica"] = process.replica;
    json["rank"] = process.rank;
  }
  return json;
}

ClusterProcess ProcessFromJson(const nlohmann::json& json) {
  ClusterProcess process;
  const std::string role = json.at("role").get<std::string>();
  if (role == "router") {
    process.role = ProcessRole::kRouter;
  } else if (role == "worker") {
    process.role = ProcessRole::kWorker;
    process.replica = json.at("replica").get<int>();
    process.rank = json.at("rank").get<int>();
  } else {
    throw std::invalid_argument("unknown role '" + role + "'");
  }
  process.pid = json.at("pid").get<pid_t>();
  process.start_time = json.at("start_time").get<uint64_t>();
  process.address = json.at("address").get<std::string>();
  process.metrics_address = json.at("metrics_address").get<std::string>();
  process.log_file = json.at("log_file").get<std::string>();
  process.ready_file = json.at("ready_file").get<std::string>();
  return process;
}

}  // namespace

std::string ClusterProcess::Name() const {
  if (role == ProcessRole::kRouter) return "router";
  return absl::StrCat("worker ", replica, ".", rank);
}

std::string ClusterStateFile(const std::string& state_dir) { return state_dir + "/cluster.json"; }
std::string ClusterLogDir(const std::string& state_dir) { return state_dir + "/logs"; }

absl::Status SaveClusterState(const std::string& state_dir, const ClusterState& state) {
  nlohmann::json processes = nlohmann::json::array();
  for (const ClusterProcess& process : state.processes) processes.push_back(ProcessJson(process));
  const nlohmann::json json{{"version", kFormatVersion},
                            {"model_dir", state.model_dir},
                            {"replicas", state.replicas},
                            {"tp", state.tp},
                            {"pp", state.pp},
                            {"detached", state.detached},
                            {"owner_pid", state.owner_pid},
                            {"router_address", state.router_address},
                            {"processes", std::move(processes)}};
  const std::string path = ClusterStateFile(state_dir);
  if (!WriteFileAtomically(path, json.dump(2) + "\n")) {
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ClusterState> LoadClusterState(const std::string& state_dir) {
  const std::string path = ClusterStateFile(state_dir);
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("--state-dir ", state_dir, ": no cluster there (", path, " does not exist)"));
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    const nlohmann::json json = nlohmann::json::parse(text.str());
    if (json.at("version").get<int>() != kFormatVersion) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": format version ", json.at("version").dump(), ", expected ", kFormatVersion));
    }
    ClusterState state;
    state.model_dir = json.at("model_dir").get<std::string>();
    state.replicas = json.at("replicas").get<int>();
    state.tp = json.at("tp").get<int>();
    state.pp = json.at("pp").get<int>();
    state.detached = json.at("detached").get<bool>();
    state.owner_pid = json.at("owner_pid").get<pid_t>();
    state.router_address = json.at("router_address").get<std::string>();
    for (const nlohmann::json& process : json.at("processes")) {
      state.processes.push_back(ProcessFromJson(process));
    }
    return state;
  } catch (const std::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a cluster state file: ", error.what()));
  }
}

absl::Status RemoveClusterState(const std::string& state_dir) {
  const std::string path = ClusterStateFile(state_dir);
  if (std::remove(path.c_str()) != 0 && errno != ENOENT) {
    return absl::InternalError(absl::StrCat("cannot remove ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace strata::cli

#include "cli/cluster_up.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/cluster_control.h"
#include "cli/cluster_processes.h"
#include "cli/cluster_state.h"
#include "cli/commands.h"
#include "cli/inference_client.h"
#include "nlohmann/json.hpp"

namespace strata::cli {
namespace {

namespace fs = std::filesystem;

constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr int kInterruptedExitCode = 130;

struct Binaries {
  std::string worker;
  std::string router;
  std::string cli;
};

std::string SelfPath() {
  std::error_code error;
  const fs::path path = fs::read_symlink("/proc/self/exe", error);
  return error ? std::string() : path.string();
}

bool IsExecutable(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

// The first executable among `candidates`, or an error listing where it looked.
absl::StatusOr<std::string> FindBinary(const std::string& name,
                                       const std::vector<std::string>& candidates) {
  for (const std::string& candidate : candidates) {
    if (IsExecutable(candidate)) return fs::weakly_canonical(candidate).string();
  }
  return absl::NotFoundError(absl::StrCat(name, " not found (looked for ",
                                          absl::StrJoin(candidates, ", "),
                                          "); build it or give --build-dir"));
}

absl::StatusOr<Binaries> LocateBinaries(const std::string& build_dir) {
  Binaries binaries;
  binaries.cli = SelfPath();
  std::vector<std::string> worker_candidates;
  std::vector<std::string> router_candidates;
  if (!build_dir.empty()) {
    worker_candidates = {build_dir + "/worker/service/strata-worker"};
    router_candidates = {build_dir + "/router/strata-router"};
  } else {
    // A build tree (<build>/cli/strata) or an installation with every binary
    // in one folder.
    const std::string here = fs::path(binaries.cli).parent_path().string();
    worker_candidates = {here + "/../worker/service/strata-worker", here + "/strata-worker"};
    router_candidates = {here + "/../router/strata-router", here + "/strata-router"};
  }
  absl::StatusOr<std::string> worker = FindBinary("strata-worker", worker_candidates);
  if (!worker.ok()) return worker.status();
  absl::StatusOr<std::string> router = FindBinary("strata-router", router_candidates);
  if (!router.ok()) return router.status();
  binaries.worker = *worker;
  binaries.router = *router;
  return binaries;
}

// Whether `binary --help` mentions `flag`: how the CLI tells which flags the
// binaries it was given understand.
absl::StatusOr<bool> HelpMentions(const std::string& binary, const std::string& flag,
                                  const std::string& scratch_file) {
  absl::StatusOr<int> code = RunToCompletion({binary, "--help"}, scratch_file);
  if (!code.ok()) return code.status();
  const std::string help = ReadWholeFile(scratch_file);
  std::remove(scratch_file.c_str());
  if (*code != 0) {
    return absl::FailedPreconditionError(absl::StrCat(binary, " --help exited with code ", *code));
  }
  return help.find(flag + " ") != std::string::npos || help.find(flag + "\n") != std::string::npos;
}

// The ready file's {"listen", "metrics"} once it exists and parses.
std::optional<std::pair<std::string, std::string>> ReadReadyFile(const std::string& path) {
  const std::string text = ReadWholeFile(path);
  if (text.empty()) return std::nullopt;
  const nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("listen") || !json["listen"].is_string()) {
    return std::nullopt;
  }
  std::string metrics;
  if (json.contains("metrics") && json["metrics"].is_string()) metrics = json["metrics"];
  return std::make_pair(json["listen"].get<std::string>(), metrics);
}

class LocalCluster {
 public:
  LocalCluster(const ClusterUpOptions& options, const Binaries& binaries)
      : options_(options), binaries_(binaries) {
    sigemptyset(&stop_signals_);
    sigaddset(&stop_signals_, SIGINT);
    sigaddset(&stop_signals_, SIGTERM);
    sigaddset(&stop_signals_, SIGHUP);
  }

  // REQUIRES: the stop signals are blocked in this thread.
  absl::Status Start() {
    deadline_ =
        std::chrono::steady_clock::now() + std::chrono::seconds(options_.startup_timeout_seconds);
    state_.model_dir = options_.model_dir;
    state_.replicas = options_.replicas;
    state_.tp = options_.tp;
    state_.pp = options_.pp;
    state_.detached = options_.detach;
    state_.owner_pid = options_.detach ? -1 : getpid();
    if (absl::Status status = CheckBinariesSupportLayout(); !status.ok()) return status;
    if (absl::Status status = StartWorkers(); !status.ok()) return status;
    if (absl::Status status = WaitUntilReady(ProcessRole::kWorker); !status.ok()) return status;
    if (absl::Status status = StartRouter(); !status.ok()) return status;
    if (absl::Status status = WaitUntilReady(ProcessRole::kRouter); !status.ok()) return status;
    state_.router_address = state_.processes.back().address;
    return SaveClusterState(options_.state_dir, state_);
  }

  const ClusterState& state() const { return state_; }

  // Serves in the foreground until a stop signal, or until the router or
  // every replica's leader has exited. Returns the exit code.
  int Serve() {
    std::vector<bool> reported(state_.processes.size(), false);
    while (true) {
      if (const int signal_number = WaitForStopSignal(std::chrono::milliseconds(200));
          signal_number > 0) {
        std::printf("\nstrata cluster: %s, stopping\n", strsignal(signal_number));
        return 0;
      }
      int leaders_alive = 0;
      for (size_t i = 0; i < state_.processes.size(); ++i) {
        const ClusterProcess& process = state_.processes[i];
        const std::optional<int> code = ReapIfExited(process.pid);
        const bool alive = !code && IsProcessAlive(process.pid, process.start_time);
        if (!alive && !reported[i]) {
          reported[i] = true;
          std::fprintf(stderr, "strata cluster: %s (pid %d) exited%s; log: %s\n",
                       process.Name().c_str(), process.pid,
                       code ? absl::StrCat(" with code ", *code).c_str() : "",
                       process.log_file.c_str());
        }
        if (!alive && process.role == ProcessRole::kRouter) {
          std::fprintf(stderr, "strata cluster: the router is gone, stopping\n");
          return 1;
        }
        if (alive && process.role == ProcessRole::kWorker && process.rank == 0) ++leaders_alive;
      }
      if (leaders_alive == 0) {
        std::fprintf(stderr, "strata cluster: no replica is left, stopping\n");
        return 1;
      }
    }
  }

  // Stops every process started so far and waits until all are gone.
  void Stop() {
    std::vector<ProcessToStop> processes;
    for (const ClusterProcess& process : state_.processes) {
      processes.push_back({process.pid, process.start_time});
    }
    const int killed = StopProcesses(processes, std::chrono::seconds(options_.grace_seconds));
    if (killed > 0) {
      std::fprintf(stderr, "strata cluster: %d process(es) ignored SIGTERM for %d s; killed\n",
                   killed, options_.grace_seconds);
    }
  }

  // The signal taken, or 0 after `timeout` without one.
  int WaitForStopSignal(std::chrono::milliseconds timeout) {
    timespec wait{};
    wait.tv_sec = timeout.count() / 1000;
    wait.tv_nsec = (timeout.count() % 1000) * 1000000L;
    const int signal_number = sigtimedwait(&stop_signals_, nullptr, &wait);
    return signal_number > 0 ? signal_number : 0;
  }

 private:
  int Ranks() const { return options_.tp * options_.pp; }

  absl::Status CheckBinariesSupportLayout() {
    const std::string scratch = ClusterLogDir(options_.state_dir) + "/help.txt";
    if (Ranks() > 1) {
      absl::StatusOr<bool> has_tp = HelpMentions(binaries_.worker, "--tp", scratch);
      if (!has_tp.ok()) return has_tp.status();
      if (!*has_tp) {
        return absl::FailedPreconditionError(
            absl::StrCat(binaries_.worker,
                         " does not support --tp/--pp; only --tp 1 --pp 1 works "
                         "with this build"));
      }
    }
    absl::StatusOr<bool> has_backends = HelpMentions(binaries_.router, "--backends", scratch);
    if (!has_backends.ok()) return has_backends.status();
    router_takes_backends_ = *has_backends;
    if (!router_takes_backends_ && options_.replicas > 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          binaries_.router, " takes a single --backend; only --replicas 1 works with this build"));
    }
    return absl::OkStatus();
  }

  absl::Status Spawn(ClusterProcess process, std::vector<std::string> argv) {
    const std::string file_stem = process.role == ProcessRole::kRouter
                                      ? std::string("router")
                                      : absl::StrCat("worker-", process.replica, ".", process.rank);
    process.log_file = absl::StrCat(ClusterLogDir(options_.state_dir), "/", file_stem, ".log");
    process.ready_file = absl::StrCat(options_.state_dir, "/ready/", file_stem, ".json");
    std::remove(process.ready_file.c_str());
    std::remove(process.log_file.c_str());
    argv.push_back("--ready-file");
    argv.push_back(process.ready_file);
    absl::StatusOr<pid_t> pid = SpawnProcess({.argv = std::move(argv),
                                              .log_file = process.log_file,
                                              .new_session = true,
                                              .terminate_with_parent = !options_.detach});
    if (!pid.ok()) return pid.status();
    process.pid = *pid;
    // The start time is read from the parent, which still holds the child
    // (even an exited one, as a zombie, until it is reaped) under this pid.
    process.start_time = ProcessStartTime(*pid).value_or(0);
    state_.processes.push_back(std::move(process));
    return SaveClusterState(options_.state_dir, state_);
  }

  absl::Status StartWorkers() {
    int threads = options_.threads;
    if (threads == 0) {
      const int cores = static_cast<int>(std::thread::hardware_concurrency());
      threads = std::max(1, cores / (options_.replicas * Ranks()));
    }
    for (int replica = 0; replica < options_.replicas; ++replica) {
      std::string leader_address;
      if (Ranks() > 1) {
        absl::StatusOr<int> port = PickFreePort();
        if (!port.ok()) return port.status();
        leader_address = absl::StrCat("127.0.0.1:", *port);
      }
      for (int rank = 0; rank < Ranks(); ++rank) {
        std::vector<std::string> argv = {binaries_.worker, "--model",     options_.model_dir,
                                         "--listen",       "127.0.0.1:0", "--metrics-listen",
                                         "127.0.0.1:0",    "--threads",   std::to_string(threads)};
        if (Ranks() > 1) {
          argv.insert(argv.end(),
                      {"--tp", std::to_string(options_.tp), "--pp", std::to_string(options_.pp),
                       "--rank", std::to_string(rank), "--leader-address", leader_address});
        }
        ClusterProcess process;
        process.role = ProcessRole::kWorker;
        process.replica = replica;
        process.rank = rank;
        if (absl::Status status = Spawn(std::move(process), std::move(argv)); !status.ok()) {
          return status;
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status StartRouter() {
    std::vector<std::string> leaders;
    for (const ClusterProcess& process : state_.processes) {
      if (process.role == ProcessRole::kWorker && process.rank == 0) {
        leaders.push_back(process.address);
      }
    }
    std::vector<std::string> argv = {binaries_.router,
                                     "--listen",
                                     absl::StrCat("127.0.0.1:", options_.router_port),
                                     "--metrics-listen",
                                     "127.0.0.1:0",
                                     router_takes_backends_ ? "--backends" : "--backend",
                                     absl::StrJoin(leaders, ",")};
    ClusterProcess process;
    process.role = ProcessRole::kRouter;
    return Spawn(std::move(process), std::move(argv));
  }

  // Waits until every process of `role` has written its ready file and
  // answers health SERVING.
  absl::Status WaitUntilReady(ProcessRole role) {
    // Indexes of processes seen SERVING; they are not asked again, but one
    // that exits meanwhile still fails the start-up.
    std::vector<bool> serving(state_.processes.size(), false);
    while (true) {
      bool all_ready = true;
      std::vector<std::string> waiting;
      for (size_t i = 0; i < state_.processes.size(); ++i) {
        ClusterProcess& process = state_.processes[i];
        if (process.role != role) continue;
        if (std::optional<int> code = ReapIfExited(process.pid)) {
          const std::string last_line = LastLogLine(process.log_file);
          return absl::FailedPreconditionError(absl::StrCat(
              process.Name(), " exited with code ", *code, " before the cluster was up",
              last_line.empty() ? "" : ": ", last_line, " (log: ", process.log_file, ")"));
        }
        if (process.address.empty()) {
          if (auto addresses = ReadReadyFile(process.ready_file)) {
            process.address = addresses->first;
            process.metrics_address = addresses->second;
            if (absl::Status status = SaveClusterState(options_.state_dir, state_); !status.ok()) {
              return status;
            }
          }
        }
        if (!serving[i]) serving[i] = !process.address.empty() && IsServing(process.address);
        if (!serving[i]) {
          all_ready = false;
          waiting.push_back(absl::StrCat(process.Name(), " (log: ", process.log_file, ")"));
        }
      }
      if (all_ready) return absl::OkStatus();
      if (std::chrono::steady_clock::now() >= deadline_) {
        return absl::DeadlineExceededError(
            absl::StrCat("not ready after ", options_.startup_timeout_seconds,
                         " s (--startup-timeout): ", absl::StrJoin(waiting, ", ")));
      }
      if (const int signal_number = WaitForStopSignal(kPollInterval); signal_number > 0) {
        return absl::CancelledError(
            absl::StrCat("interrupted by ", strsignal(signal_number), " during start-up"));
      }
    }
  }

  const ClusterUpOptions options_;
  const Binaries binaries_;
  sigset_t stop_signals_;
  std::chrono::steady_clock::time_point deadline_;
  bool router_takes_backends_ = true;
  ClusterState state_;
};

absl::Status ValidateOptions(const ClusterUpOptions& options) {
  if (options.replicas < 1) return absl::InvalidArgumentError("--replicas must be at least 1");
  if (options.tp < 1) return absl::InvalidArgumentError("--tp must be at least 1");
  if (options.pp < 1) return absl::InvalidArgumentError("--pp must be at least 1");
  if (options.threads < 0) return absl::InvalidArgumentError("--threads must be 0 or more");
  if (options.router_port < 0 || options.router_port > 65535) {
    return absl::InvalidArgumentError("--router-port must be in 0..65535");
  }
  if (options.startup_timeout_seconds < 1) {
    return absl::InvalidArgumentError("--startup-timeout must be at least 1 s");
  }
  if (options.grace_seconds < 0) return absl::InvalidArgumentError("--grace must be 0 or more");
  if (options.detach && options.state_dir.empty()) {
    return absl::InvalidArgumentError("--detach needs --state-dir (where status and down find it)");
  }
  if (options.detach && !options.sample_prompt.empty()) {
    return absl::InvalidArgumentError(
        "--sample-prompt runs in the foreground only, not with --detach");
  }
  std::error_code error;
  if (!fs::is_directory(options.model_dir, error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model ", options.model_dir, ": not a directory"));
  }
  return absl::OkStatus();
}

// Creates the state folder and its logs/ and ready/ folders; refuses one that
// records a cluster with processes still alive.
absl::Status PrepareStateDir(const std::string& state_dir) {
  if (absl::StatusOr<ClusterState> existing = LoadClusterState(state_dir); existing.ok()) {
    for (const ClusterProcess& process : existing->processes) {
      if (IsProcessAlive(process.pid, process.start_time)) {
        return absl::AlreadyExistsError(absl::StrCat(
            "--state-dir ", state_dir, " holds a running cluster (", process.Name(), " pid ",
            process.pid, "); stop it with `strata cluster down --state-dir ", state_dir, "`"));
      }
    }
  }
  std::error_code error;
  for (const std::string& dir : {ClusterLogDir(state_dir), state_dir + "/ready"}) {
    fs::create_directories(dir, error);
    if (error) {
      return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", error.message()));
    }
  }
  return absl::OkStatus();
}

void StreamSample(const std::string& router_address, const std::string& prompt) {
  v1::GenerateRequest request;
  request.set_text(prompt);
  request.mutable_sampling()->set_temperature(0.8f);
  request.mutable_sampling()->set_seed(7);
  request.mutable_stopping()->set_max_tokens(200);
  std::printf("A sample story, streamed through the router:\n\n%s", prompt.c_str());
  std::fflush(stdout);
  InferenceClient client(router_address, std::chrono::seconds(120));
  const absl::Status status = client.Generate(request, [](const v1::GenerateResponse& response) {
    std::fwrite(response.text().data(), 1, response.text().size(), stdout);
    std::fflush(stdout);
  });
  std::printf("\n\n");
  if (!status.ok()) PrintError(status);
}

void PrintSummary(const ClusterState& state, const std::string& state_dir) {
  std::printf("Strata is serving %s: %d replica(s) of tp %d x pp %d\n", state.model_dir.c_str(),
              state.replicas, state.tp, state.pp);
  std::printf("  router      %s  (metrics http://%s/metrics)\n", state.router_address.c_str(),
              state.processes.back().metrics_address.c_str());
  for (const ClusterProcess& process : state.processes) {
    if (process.role != ProcessRole::kWorker) continue;
    std::printf("  worker %d.%d  %s  (metrics http://%s/metrics)\n", process.replica, process.rank,
                process.address.c_str(), process.metrics_address.c_str());
  }
  std::printf("State and logs: %s\n\n", state_dir.c_str());
  std::fflush(stdout);
}

void PrintHowToCall(const std::string& router_address, const std::string& cli,
                    const std::string& state_dir) {
  std::printf("Call it yourself:\n");
  std::printf("  %s generate --server %s \"Lily saw a big dog\"\n", cli.c_str(),
              router_address.c_str());
  std::printf("  %s generate --server %s --json --temperature 0 --max-tokens 20 \"Tim\"\n",
              cli.c_str(), router_address.c_str());
  std::printf("  %s info --server %s\n", cli.c_str(), router_address.c_str());
  std::printf("  %s cluster status --state-dir %s\n", cli.c_str(), state_dir.c_str());
  std::printf("Ctrl-C stops everything.\n");
  std::fflush(stdout);
}

}  // namespace

int RunClusterUp(const ClusterUpOptions& given_options) {
  // Blocked before any thread starts (gRPC's included), so that only
  // sigtimedwait below takes them; children get a clean mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ClusterUpOptions options = given_options;
  if (absl::Status status = ValidateOptions(options); !status.ok()) return PrintError(status);
  options.model_dir = fs::absolute(options.model_dir).lexically_normal().string();
  bool temporary_state_dir = false;
  if (options.state_dir.empty()) {
    std::string pattern = (fs::temp_directory_path() / "strata-cluster.XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      return PrintError(absl::InternalError("cannot create a state folder under /tmp"));
    }
    options.state_dir = pattern;
    temporary_state_dir = true;
  }
  options.state_dir = fs::absolute(options.state_dir).lexically_normal().string();
  absl::StatusOr<Binaries> binaries = LocateBinaries(options.build_dir);
  if (!binaries.ok()) return PrintError(binaries.status());
  if (absl::Status status = PrepareStateDir(options.state_dir); !status.ok()) {
    return PrintError(status);
  }

  LocalCluster cluster(options, *binaries);
  if (absl::Status status = cluster.Start(); !status.ok()) {
    cluster.Stop();
    RemoveClusterState(options.state_dir).IgnoreError();
    PrintError(status);
    return status.code() == absl::StatusCode::kCancelled ? kInterruptedExitCode : 1;
  }
  if (options.detach) {
    std::printf("%s\n", cluster.state().router_address.c_str());
    return 0;
  }

  PrintSummary(cluster.state(), options.state_dir);
  if (!options.sample_prompt.empty()) {
    StreamSample(cluster.state().router_address, options.sample_prompt);
  }
  PrintHowToCall(cluster.state().router_address, binaries->cli, options.state_dir);
  const int exit_code = cluster.Serve();
  cluster.Stop();
  if (absl::Status status = RemoveClusterState(options.state_dir); !status.ok()) {
    return PrintError(status);
  }
  if (temporary_state_dir && exit_code == 0) {
    std::error_code error;
    fs::remove_all(options.state_dir, error);
  }
  std::printf("strata cluster: stopped\n");
  return exit_code;
}

}  // namespace strata::cli

// The state file of `strata cluster` and the process control under it.
#include "cli/cluster_state.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "cli/cluster_processes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/child_process.h"

namespace strata::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

ClusterState TwoProcessState() {
  ClusterState state;
  state.model_dir = "/models/m";
  state.replicas = 1;
  state.tp = 2;
  state.pp = 3;
  state.detached = true;
  state.owner_pid = -1;
  state.router_address = "127.0.0.1:5";
  ClusterProcess worker;
  worker.role = ProcessRole::kWorker;
  worker.replica = 0;
  worker.rank = 4;
  worker.pid = 1234;
  worker.start_time = 987654321;
  worker.address = "127.0.0.1:7";
  worker.metrics_address = "127.0.0.1:8";
  worker.log_file = "/s/logs/worker-0.4.log";
  worker.ready_file = "/s/ready/worker-0.4.json";
  ClusterProcess router;
  router.role = ProcessRole::kRouter;
  router.pid = 99;
  router.start_time = 5;
  router.address = "127.0.0.1:5";
  router.metrics_address = "127.0.0.1:6";
  router.log_file = "/s/logs/router.log";
  router.ready_file = "/s/ready/router.json";
  state.processes = {worker, router};
  return state;
}

TEST(ClusterStateTest, SavedStateLoadsBackWithEveryField) {
  testing::TempDir dir;
  const ClusterState saved = TwoProcessState();
  ASSERT_TRUE(SaveClusterState(dir.path(), saved).ok());
  absl::StatusOr<ClusterState> loaded = LoadClusterState(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->model_dir, "/models/m");
  EXPECT_EQ(loaded->tp, 2);
  EXPECT_EQ(loaded->pp, 3);
  EXPECT_TRUE(loaded->detached);
  EXPECT_EQ(loaded->router_address, "127.0.0.1:5");
  ASSERT_THAT(loaded->processes, SizeIs(2));
  const ClusterProcess& worker = loaded->processes[0];
  EXPECT_EQ(worker.role, ProcessRole::kWorker);
  EXPECT_EQ(worker.replica, 0);
  EXPECT_EQ(worker.rank, 4);
  EXPECT_EQ(worker.pid, 1234);
  EXPECT_EQ(worker.start_time, 987654321u);
  EXPECT_EQ(worker.metrics_address, "127.0.0.1:8");
  EXPECT_EQ(worker.log_file, "/s/logs/worker-0.4.log");
  EXPECT_EQ(worker.Name(), "worker 0.4");
  const ClusterProcess& router = loaded->processes[1];
  EXPECT_EQ(router.role, ProcessRole::kRouter);
  EXPECT_EQ(router.Name(), "router");
  EXPECT_EQ(router.ready_file, "/s/ready/router.json");
}

TEST(ClusterStateTest, MissingStateIsNotFoundNamingTheFolder) {
  testing::TempDir dir;
  absl::StatusOr<ClusterState> loaded = LoadClusterState(dir.File("nowhere"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(dir.File("nowhere")));
}

TEST(ClusterStateTest, UnreadableStateIsInvalidArgumentNamingTheFile) {
  testing::TempDir dir;
  std::ofstream(ClusterStateFile(dir.path())) << R"({"version": 1, "processes": "no"})";
  absl::StatusOr<ClusterState> loaded = LoadClusterState(dir.path());
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("cluster.json"));
}

TEST(ClusterStateTest, RemovingTheStateMakesItNotFound) {
  testing::TempDir dir;
  ASSERT_TRUE(SaveClusterState(dir.path(), TwoProcessState()).ok());
  ASSERT_TRUE(RemoveClusterState(dir.path()).ok());
  EXPECT_EQ(LoadClusterState(dir.path()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(RemoveClusterState(dir.path()).ok());  // already gone is fine
}

// Waits until `pid` (a child of this test) has exited and reaps it.
std::optional<int> WaitForChild(pid_t pid, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::optional<int> code = ReapIfExited(pid)) return code;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

TEST(ClusterProcessesTest, SpawnedProcessWritesToItsLogAndIsReaped) {
  testing::TempDir dir;
  absl::StatusOr<pid_t> pid = SpawnProcess(
      {.argv = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, .log_file = dir.File("log")});
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_EQ(WaitForChild(*pid, std::chrono::seconds(10)), 3);
  EXPECT_EQ(ReadWholeFile(dir.File("log")), "out\nerr\n");
  EXPECT_EQ(LastLogLine(dir.File("log")), "err");
}

TEST(ClusterProcessesTest, ExecFailureExitsWith127AndSaysWhy) {
  testing::TempDir dir;
  absl::StatusOr<pid_t> pid =
      SpawnProcess({.argv = {dir.File("no-such-binary")}, .log_file = dir.File("log")});
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_EQ(WaitForChild(*pid, std::chrono::seconds(10)), 127);
  EXPECT_THAT(LastLogLine(dir.File("log")), HasSubstr("cannot execute"));
}

TEST(ClusterProcessesTest, StartTimeTellsAReusedPidApart) {
  testing::TempDir dir;
  absl::StatusOr<pid_t> pid =
      SpawnProcess({.argv = {"/bin/sleep", "30"}, .log_file = dir.File("log")});
  ASSERT_TRUE(pid.ok()) << pid.status();
  const std::optional<uint64_t> start_time = ProcessStartTime(*pid);
  ASSERT_TRUE(start_time.has_value());
  EXPECT_TRUE(IsProcessAlive(*pid, *start_time));
  EXPECT_FALSE(IsProcessAlive(*pid, *start_time + 1));
  kill(*pid, SIGKILL);
  ASSERT_TRUE(WaitForChild(*pid, std::chrono::seconds(10)).has_value());
  EXPECT_FALSE(IsProcessAlive(*pid, *start_time));
}

TEST(ClusterProcessesTest, StopKillsAProcessThatIgnoresSigtermAfterTheGracePeriod) {
  testing::TempDir dir;
  // The shell ignores SIGTERM, and so does the sleep it runs in the foreground.
  absl::StatusOr<pid_t> stubborn =
      SpawnProcess({.argv = {"/bin/sh", "-c", "trap '' TERM; echo ready; sleep 60"},
                    .log_file = dir.File("stubborn")});
  absl::StatusOr<pid_t> polite =
      SpawnProcess({.argv = {"/bin/sleep", "60"}, .log_file = dir.File("polite")});
  ASSERT_TRUE(stubborn.ok() && polite.ok());
  while (ReadWholeFile(dir.File("stubborn")).empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::vector<ProcessToStop> processes = {{*stubborn, *ProcessStartTime(*stubborn)},
                                                {*polite, *ProcessStartTime(*polite)}};
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(StopProcesses(processes, std::chrono::milliseconds(500)), 1);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  for (const ProcessToStop& process : processes) {
    EXPECT_FALSE(IsProcessAlive(process.pid, process.start_time));
  }
}

TEST(ClusterProcessesTest, StopSkipsProcessesAlreadyGone) {
  testing::TempDir dir;
  absl::StatusOr<pid_t> pid = SpawnProcess({.argv = {"/bin/true"}, .log_file = dir.File("log")});
  ASSERT_TRUE(pid.ok());
  const uint64_t start_time = ProcessStartTime(*pid).value_or(1);
  ASSERT_TRUE(WaitForChild(*pid, std::chrono::seconds(10)).has_value());
  EXPECT_EQ(StopProcesses({{*pid, start_time}}, std::chrono::milliseconds(100)), 0);
}

TEST(ClusterProcessesTest, PicksAPortInRange) {
  absl::StatusOr<int> port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
  EXPECT_LT(*port, 65536);
}

}  // namespace
}  // namespace strata::cli

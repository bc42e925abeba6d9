// `strata cluster up | status | down` as real processes: a router and worker
// replicas on the bundled model, driven through the CLI's contract. Every
// test stops whatever it started: `down`, then SIGKILL to any process whose
// command line names the test's folder.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/cluster_processes.h"
#include "cli/inference_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"
#include "tests/integration/test_servers.h"

namespace strata::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::StartsWith;

constexpr auto kUpTimeout = std::chrono::seconds(180);

// Live (not zombie) processes whose command line contains `text`, this test
// process excepted.
std::vector<pid_t> ProcessesMentioning(const std::string& text) {
  std::vector<pid_t> found;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return found;
  while (dirent* entry = readdir(proc)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid == getpid()) continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"));
    std::stringstream cmdline;
    cmdline << in.rdbuf();
    if (cmdline.str().find(text) != std::string::npos && cli::ProcessStartTime(pid)) {
      found.push_back(pid);
    }
  }
  closedir(proc);
  return found;
}

bool HelpMentions(const std::string& binary, const std::string& flag) {
  const CommandResult help = RunCommand({binary, "--help"});
  return help.stdout_text.find(flag + " ") != std::string::npos;
}

struct StatusEntry {
  std::string role;
  int replica = -1;
  int rank = -1;
  pid_t pid = -1;
  std::string address;
  std::string metrics_address;
  bool healthy = false;
};

class ClusterCommandTest : public ::testing::Test {
 protected:
  void TearDown() override {
    RunCommand({CliBinary(), "cluster", "down", "--state-dir", state_dir(), "--grace", "2"});
    for (const pid_t pid : ProcessesMentioning(temp_.path())) kill(pid, SIGKILL);
  }

  std::string state_dir() const { return temp_.File("state"); }

  CommandResult Cluster(std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), {CliBinary(), "cluster"});
    return RunCommand(arguments, std::nullopt, kUpTimeout);
  }

  CommandResult UpDetached(int replicas, int tp, int pp) {
    return Cluster({"up", "--model", STRATA_MODEL_DIR, "--replicas", std::to_string(replicas),
                    "--tp", std::to_string(tp), "--pp", std::to_string(pp), "--threads", "1",
                    "--detach", "--state-dir", state_dir()});
  }

  // `status --json`, parsed; fails the test on anything off-contract.
  std::vector<StatusEntry> Status() {
    const CommandResult result = Cluster({"status", "--state-dir", state_dir(), "--json"});
    EXPECT_EQ(result.exit_code, 0) << result.stderr_text;
    const std::vector<std::string> lines = Lines(result.stdout_text);
    EXPECT_THAT(lines, SizeIs(1)) << result.stdout_text;
    std::vector<StatusEntry> entries;
    if (lines.size() != 1) return entries;
    const nlohmann::json json = nlohmann::json::parse(lines[0]);
    for (const nlohmann::json& process : json.at("processes")) {
      StatusEntry entry;
      entry.role = process.at("role");
      entry.pid = process.at("pid");
      entry.address = process.at("address");
      entry.metrics_address = process.at("metrics_address");
      entry.healthy = process.at("healthy");
      if (entry.role == "worker") {
        entry.replica = process.at("replica");
        entry.rank = process.at("rank");
      } else {
        EXPECT_EQ(entry.role, "router");
        EXPECT_FALSE(process.contains("rank"));
        EXPECT_FALSE(process.contains("replica"));
      }
      entries.push_back(entry);
    }
    return entries;
  }

  // Checks status lists the router and replicas x tp x pp healthy workers
  // with live pids; returns the router's address.
  std::string ExpectHealthyCluster(int replicas, int ranks) {
    const std::vector<StatusEntry> entries = Status();
    EXPECT_THAT(entries, SizeIs(1 + replicas * ranks));
    std::string router_address;
    std::set<std::pair<int, int>> workers;
    for (const StatusEntry& entry : entries) {
      SCOPED_TRACE(absl::StrCat(entry.role, " ", entry.replica, ".", entry.rank));
      EXPECT_TRUE(entry.healthy);
      EXPECT_TRUE(cli::ProcessStartTime(entry.pid).has_value()) << "pid " << entry.pid;
      EXPECT_THAT(entry.address, StartsWith("127.0.0.1:"));
      EXPECT_THAT(entry.metrics_address, StartsWith("127.0.0.1:"));
      if (entry.role == "router") {
        router_address = entry.address;
      } else {
        workers.insert({entry.replica, entry.rank});
      }
    }
    std::set<std::pair<int, int>> expected;
    for (int replica = 0; replica < replicas; ++replica) {
      for (int rank = 0; rank < ranks; ++rank) expected.insert({replica, rank});
    }
    EXPECT_EQ(workers, expected);
    return router_address;
  }

  // Greedy generation through `address` matches the reference implementation.
  void ExpectReferenceTokens(const std::string& address) {
    std::ifstream in(std::string(STRATA_MODEL_DIR) + "/reference.json");
    const nlohmann::json reference = nlohmann::json::parse(in).at("prompts").at(0);
    const std::vector<int32_t> prompt_ids = reference.at("prompt_ids");
    const std::vector<int32_t> generated = reference.at("generated_ids");
    constexpr int kTokens = 24;
    ASSERT_GE(generated.size(), static_cast<size_t>(kTokens));
    v1::GenerateRequest request;
    request.mutable_token_ids()->mutable_ids()->Add(prompt_ids.begin(), prompt_ids.end());
    request.mutable_sampling()->set_temperature(0);
    request.mutable_stopping()->set_max_tokens(kTokens);
    request.mutable_options()->set_return_token_ids(true);
    std::vector<int32_t> ids;
    cli::InferenceClient client(address, std::chrono::seconds(60));
    const absl::Status status = client.Generate(request, [&](const v1::GenerateResponse& response) {
      ids.insert(ids.end(), response.token_ids().begin(), response.token_ids().end());
    });
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(ids, std::vector<int32_t>(generated.begin(), generated.begin() + kTokens));
  }

  // `down` exits 0, leaves no process of the test's folder, removes the state.
  void ExpectDownLeavesNothing(const std::vector<StatusEntry>& entries) {
    const CommandResult down = Cluster({"down", "--state-dir", state_dir()});
    EXPECT_EQ(down.exit_code, 0) << down.stderr_text;
    for (const StatusEntry& entry : entries) {
      EXPECT_FALSE(cli::ProcessStartTime(entry.pid).has_value())
          << entry.role << " pid " << entry.pid << " still runs";
    }
    EXPECT_THAT(ProcessesMentioning(temp_.path()), IsEmpty());
    const CommandResult status = Cluster({"status", "--state-dir", state_dir(), "--json"});
    EXPECT_NE(status.exit_code, 0);
  }

  void ExpectDetachedClusterWorks(int replicas, int tp, int pp) {
    const CommandResult up = UpDetached(replicas, tp, pp);
    ASSERT_EQ(up.exit_code, 0) << up.stderr_text;
    const std::string router_address = ExpectHealthyCluster(replicas, tp * pp);
    EXPECT_EQ(Lines(up.stdout_text), std::vector<std::string>{router_address});
    ExpectReferenceTokens(router_address);
    ExpectDownLeavesNothing(Status());
  }

  TempDir temp_;
};

TEST_F(ClusterCommandTest, DetachedSingleReplicaServesReferenceTokensAndDownLeavesNothing) {
  ExpectDetachedClusterWorks(/*replicas=*/1, /*tp=*/1, /*pp=*/1);
}

TEST_F(ClusterCommandTest, DetachedTwoReplicasServeThroughTheRouterAndDownLeavesNothing) {
  if (!HelpMentions(RouterBinary(), "--backends")) {
    GTEST_SKIP() << "strata-router has no --backends yet: one replica per router";
  }
  ExpectDetachedClusterWorks(/*replicas=*/2, /*tp=*/1, /*pp=*/1);
}

TEST_F(ClusterCommandTest, DetachedTwoByTwoReplicaServesReferenceTokensAndDownLeavesNothing) {
  if (!HelpMentions(WorkerBinary(), "--tp")) {
    GTEST_SKIP() << "strata-worker has no --tp/--pp yet: single-rank replicas only";
  }
  ExpectDetachedClusterWorks(/*replicas=*/1, /*tp=*/2, /*pp=*/2);
}

TEST_F(ClusterCommandTest, StatusShowsAKilledWorkerUnhealthyAndDownStillSucceeds) {
  const CommandResult up = UpDetached(1, 1, 1);
  ASSERT_EQ(up.exit_code, 0) << up.stderr_text;
  std::vector<StatusEntry> entries = Status();
  ASSERT_THAT(entries, SizeIs(2));
  const auto worker = std::find_if(entries.begin(), entries.end(),
                                   [](const StatusEntry& e) { return e.role == "worker"; });
  ASSERT_NE(worker, entries.end());
  ASSERT_EQ(kill(worker->pid, SIGKILL), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (cli::ProcessStartTime(worker->pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (const StatusEntry& entry : Status()) {
    if (entry.role == "worker") {
      EXPECT_FALSE(entry.healthy);
    }
  }
  const CommandResult text_status = Cluster({"status", "--state-dir", state_dir()});
  EXPECT_EQ(text_status.exit_code, 0);
  EXPECT_THAT(text_status.stdout_text, HasSubstr("GONE"));
  ExpectDownLeavesNothing(entries);
}

TEST_F(ClusterCommandTest, UpRefusesAStateDirWithARunningCluster) {
  ASSERT_EQ(UpDetached(1, 1, 1).exit_code, 0);
  const CommandResult again = UpDetached(1, 1, 1);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.stderr_text, HasSubstr("holds a running cluster"));
  EXPECT_THAT(Status(), SizeIs(2));  // the first cluster is untouched
}

TEST_F(ClusterCommandTest, BadModelFailsWithOneLineAndLeavesNothingRunning) {
  const std::string model = temp_.File("broken-model");
  ASSERT_EQ(mkdir(model.c_str(), 0755), 0);
  std::ofstream(model + "/config.json") << "{ this is not json";
  const CommandResult up = Cluster(
      {"up", "--model", model, "--detach", "--state-dir", state_dir(), "--startup-timeout", "60"});
  EXPECT_NE(up.exit_code, 0);
  EXPECT_THAT(Lines(up.stderr_text), SizeIs(1)) << up.stderr_text;
  EXPECT_THAT(up.stderr_text, StartsWith("strata: "));
  EXPECT_THAT(up.stderr_text, HasSubstr("worker 0.0 exited with code"));
  EXPECT_THAT(ProcessesMentioning(temp_.path()), IsEmpty());
  EXPECT_NE(Cluster({"status", "--state-dir", state_dir()}).exit_code, 0);
}

TEST_F(ClusterCommandTest, MissingModelFolderFailsWithOneLine) {
  const CommandResult up = Cluster(
      {"up", "--model", temp_.File("no-such-model"), "--detach", "--state-dir", state_dir()});
  EXPECT_NE(up.exit_code, 0);
  EXPECT_THAT(Lines(up.stderr_text), SizeIs(1)) << up.stderr_text;
  EXPECT_THAT(up.stderr_text, HasSubstr("--model"));
  EXPECT_THAT(ProcessesMentioning(temp_.path()), IsEmpty());
}

TEST_F(ClusterCommandTest, StatusAndDownOnAFolderWithoutAClusterFailClearly) {
  for (const std::string& dir : {temp_.File("missing"), temp_.path()}) {
    SCOPED_TRACE(dir);
    const CommandResult status = Cluster({"status", "--state-dir", dir, "--json"});
    EXPECT_NE(status.exit_code, 0);
    EXPECT_THAT(status.stderr_text, HasSubstr("no cluster there"));
    EXPECT_THAT(status.stderr_text, HasSubstr(dir));
    const CommandResult down = Cluster({"down", "--state-dir", dir});
    EXPECT_NE(down.exit_code, 0);
    EXPECT_THAT(down.stderr_text, HasSubstr("no cluster there"));
  }
}

// A build tree whose worker never becomes ready and ignores SIGTERM, and
// whose router would take --backends.
std::string WriteStuckBuildTree(const TempDir& temp) {
  const std::string build = temp.File("stuck-build");
  for (const std::string& dir :
       {build, build + "/worker", build + "/worker/service", build + "/router"}) {
    EXPECT_EQ(mkdir(dir.c_str(), 0755), 0) << dir;
  }
  const auto write_script = [](const std::string& path, const std::string& body) {
    std::ofstream(path) << "#!/bin/sh\n" << body;
    chmod(path.c_str(), 0755);
  };
  write_script(build + "/worker/service/strata-worker",
               "trap '' TERM\nwhile true; do sleep 0.2; done\n");
  write_script(build + "/router/strata-router",
               "if [ \"$1\" = --help ]; then echo '  --backends TEXT'; exit 0; fi\nsleep 300\n");
  return build;
}

TEST_F(ClusterCommandTest, StartupTimeoutStopsEvenProcessesThatIgnoreSigterm) {
  const std::string build = WriteStuckBuildTree(temp_);
  const auto start = std::chrono::steady_clock::now();
  const CommandResult up =
      Cluster({"up", "--model", STRATA_MODEL_DIR, "--build-dir", build, "--detach", "--state-dir",
               state_dir(), "--startup-timeout", "1", "--grace", "1"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  EXPECT_EQ(up.exit_code, 1);
  EXPECT_THAT(up.stderr_text, HasSubstr("not ready after 1 s"));
  EXPECT_THAT(up.stderr_text, HasSubstr("worker 0.0"));
  EXPECT_THAT(ProcessesMentioning(temp_.path()), IsEmpty());
}

TEST_F(ClusterCommandTest, SigtermDuringStartupStopsEverything) {
  const std::string build = WriteStuckBuildTree(temp_);
  absl::StatusOr<std::unique_ptr<ChildProcess>> cli =
      ChildProcess::Start({{CliBinary(), "cluster", "up", "--model", STRATA_MODEL_DIR,
                            "--build-dir", build, "--state-dir", state_dir(), "--grace", "1"},
                           temp_.path(),
                           "cluster-up",
                           std::nullopt});
  ASSERT_TRUE(cli.ok()) << cli.status();
  // The state file appears once the worker has been started.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (access((state_dir() + "/cluster.json").c_str(), F_OK) != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  (*cli)->Signal(SIGTERM);
  EXPECT_EQ((*cli)->WaitForExit(std::chrono::seconds(30)), 130);
  EXPECT_THAT((*cli)->Stderr(), HasSubstr("interrupted"));
  EXPECT_THAT(ProcessesMentioning(temp_.path()), IsEmpty());
}

TEST_F(ClusterCommandTest, ForegroundClusterStopsEverythingOnCtrlC) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> cli =
      ChildProcess::Start({{CliBinary(), "cluster", "up", "--model", STRATA_MODEL_DIR, "--threads",
                            "1", "--state-dir", state_dir(), "--sample-prompt", "Once upon a time"},
                           temp_.path(),
                           "cluster-up",
                           std::nullopt});
  ASSERT_TRUE(cli.ok()) << cli.status();
  absl::StatusOr<std::string> ready =
      (*cli)->WaitForStdoutLine("Ctrl-C stops everything", kUpTimeout);
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_THAT((*cli)->Stdout(), HasSubstr("Once upon a time"));
  const std::vector<StatusEntry> entries = Status();
  ASSERT_THAT(entries, SizeIs(2));
  for (const StatusEntry& entry : entries) EXPECT_TRUE(entry.healthy);

  (*cli)->Signal(SIGINT);
  EXPECT_EQ((*cli)->WaitForExit(std::chrono::seconds(60)), 0) << (*cli)->Stderr();
  for (const StatusEntry& entry : entries) {
    EXPECT_FALSE(cli::ProcessStartTime(entry.pid).has_value()) << entry.role << " still runs";
  }
  EXPECT_THAT(ProcessesMentioning(temp_.path()), IsEmpty());
  EXPECT_NE(Cluster({"status", "--state-dir", state_dir()}).exit_code, 0);
}

}  // namespace
}  // namespace strata::testing

// The router as a process in front of real workers (bundled model) on
// 127.0.0.1: cancellation reaching every worker, graceful drain of a router
// and of a worker (on SIGTERM, and on request through the router's admin API
// and `strata drain`), admission control under 10x overload, and DNS
// discovery whose answer changes while streams are in flight.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "strata/v1/router_admin.grpc.pb.h"
#include "tests/router/router_processes.h"

namespace strata::router {
namespace {

using strata::testing::ServerProcess;
using strata::testing::TempDir;
using testing::RunStreams;
using testing::ScrapeMetric;
using testing::StartRouter;
using testing::StartWorker;
using testing::StoryRequest;
using testing::StreamResult;
using testing::WaitFor;

std::string HealthySeries(const std::string& backend) {
  return absl::StrCat("strata_router_backend_healthy{backend=\"", backend, "\"}");
}

double OkCount(const ServerProcess& worker) {
  return ScrapeMetric(worker, "strata_requests_total{code=\"OK\"}").value_or(0);
}

// Whether the worker's OK count reaches `expected` soon (it is counted as the
// call ends, which may be just after the client sees the end).
bool OkCountBecomes(const ServerProcess& worker, double expected) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    if (OkCount(worker) == expected) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return OkCount(worker) == expected;
}

// Resident memory of a process in KiB (VmRSS), 0 if unknown.
long ResidentKib(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return 0;
}

// The router's --admin-listen address, from its "serving on ... admin HOST:PORT" line.
std::string AdminAddress(const ServerProcess& router) {
  const std::string out = router.process->Stdout();
  const size_t at = out.find(" admin ");
  if (at == std::string::npos) return "";
  const size_t end = out.find_first_of(" \n", at + 7);
  return out.substr(at + 7, end == std::string::npos ? std::string::npos : end - at - 7);
}

// The router's view of `backend` (ListBackends); empty when not listed.
std::optional<v1::BackendState> BackendState(v1::RouterAdmin::Stub& admin,
                                             const std::string& backend) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListBackendsResponse response;
  if (!admin.ListBackends(&context, {}, &response).ok()) return std::nullopt;
  for (const v1::BackendState& state : response.backends()) {
    if (state.address() == backend) return state;
  }
  return std::nullopt;
}

// Runs the strata CLI with `args` to its end.
struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};
CliRun RunCli(std::vector<std::string> args, const std::string& log_dir, const std::string& name) {
  args.insert(args.begin(), strata::testing::CliBinary());
  CliRun run;
  absl::StatusOr<std::unique_ptr<strata::testing::ChildProcess>> cli =
      strata::testing::ChildProcess::Start({std::move(args), log_dir, name, std::nullopt});
  if (!cli.ok()) {
    run.err = std::string(cli.status().message());
    return run;
  }
  run.exit_code = (*cli)->WaitForExit(std::chrono::seconds(20)).value_or(-1);
  run.out = (*cli)->Stdout();
  run.err = (*cli)->Stderr();
  return run;
}

class RouterProcessTest : public ::testing::Test {
 protected:
  // Starts `count` workers on 127.0.0.1 and waits until they serve.
  void StartWorkers(int count, std::vector<std::string> extra = {}) {
    for (int i = 0; i < count; ++i) {
      absl::StatusOr<ServerProcess> worker =
          StartWorker("127.0.0.1:0", absl::StrCat("worker", i), logs_.path(), extra);
      ASSERT_TRUE(worker.ok()) << worker.status();
      addresses_.push_back(worker->address);
      workers_.push_back(*std::move(worker));
    }
    for (const ServerProcess& worker : workers_) {
      ASSERT_TRUE(strata::testing::WaitUntilServing(worker).ok());
    }
  }

  void StartRouterOver(std::vector<std::string> flags) {
    flags.insert(flags.begin(), {"--backends", absl::StrJoin(addresses_, ",")});
    absl::StatusOr<ServerProcess> router = StartRouter(std::move(flags), logs_.path());
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = *std::move(router);
    for (const std::string& address : addresses_) {
      ASSERT_TRUE(WaitFor([&] { return ScrapeMetric(router_, HealthySeries(address)) == 1.0; },
                          std::chrono::seconds(10)));
    }
  }

  TempDir logs_;
  std::vector<ServerProcess> workers_;
  std::vector<std::string> addresses_;
  ServerProcess router_;
};

TEST_F(RouterProcessTest, CancelsReachEveryWorkerAndFreeTheirRequests) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2));
  ASSERT_NO_FATAL_FAILURE(StartRouterOver({"--policy", "round_robin"}));
  constexpr int kStreams = 500;
  std::vector<int> cancel_at(kStreams);
  std::mt19937 random(7);
  for (int& at : cancel_at) at = std::uniform_int_distribution<int>(0, 12)(random);
  const std::vector<StreamResult> results = RunStreams(
      router_.address, kStreams, 50, [](int) { return StoryRequest(200); },
      std::chrono::seconds(60), [&](int i) { return cancel_at[i]; });
  int cancelled = 0;
  for (int i = 0; i < kStreams; ++i) {
    const StreamResult& result = results[i];
    if (result.status.ok()) {
      // A worker may pack several tokens into one response when the client
      // lags; such a stream can end before its cancel point.
      EXPECT_TRUE(result.finished);
      EXPECT_LT(result.responses, cancel_at[i]);
      continue;
    }
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED)
        << result.status.error_message();
    cancelled += result.status.error_code() == grpc::StatusCode::CANCELLED;
  }
  std::printf("cancel: %d of %d streams cancelled\n", cancelled, kStreams);
  EXPECT_GT(cancelled, kStreams * 9 / 10);
  for (const ServerProcess& worker : workers_) {
    EXPECT_TRUE(WaitFor(
        [&] {
          const auto running = ScrapeMetric(worker, "strata_requests_running");
          const auto waiting = ScrapeMetric(worker, "strata_requests_waiting");
          const auto total = ScrapeMetric(worker, "strata_kv_cache_blocks");
          const auto free = ScrapeMetric(worker, "strata_kv_cache_blocks_free");
          return running == 0.0 && waiting == 0.0 && total.has_value() && free == total;
        },
        std::chrono::seconds(10)))
        << worker.address << " still holds requests or KV blocks";
  }
  EXPECT_TRUE(
      WaitFor([&] { return ScrapeMetric(router_, "strata_router_requests_in_flight") == 0; },
              std::chrono::seconds(5)));
}

TEST_F(RouterProcessTest, SigtermToTheRouterLetsStreamsInFlightComplete) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(1));
  ASSERT_NO_FATAL_FAILURE(StartRouterOver({"--drain-timeout", "30"}));
  std::atomic<int> started{0};
  std::vector<StreamResult> results;
  std::thread load([&] {
    results = RunStreams(
        router_.address, 10, 10, [](int) { return StoryRequest(400); }, std::chrono::seconds(60),
        nullptr, &started);
  });
  ASSERT_TRUE(WaitFor(
      [&] { return ScrapeMetric(router_, "strata_router_requests_in_flight").value_or(0) >= 10; },
      std::chrono::seconds(10)));
  router_.process->Signal(SIGTERM);
  // Health turns NOT_SERVING at once.
  EXPECT_TRUE(WaitFor(
      [&] {
        return strata::testing::CheckHealth(router_.address, "strata.v1.Inference") !=
               grpc::health::v1::HealthCheckResponse::SERVING;
      },
      std::chrono::seconds(2)));
  load.join();
  for (const StreamResult& result : results) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_TRUE(result.finished);
  }
  EXPECT_EQ(router_.process->WaitForExit(std::chrono::seconds(10)), 0);
}

TEST_F(RouterProcessTest, SigtermToAWorkerDrainsItWhileNewCallsGoElsewhere) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2, {"--drain-seconds", "60"}));
  ASSERT_NO_FATAL_FAILURE(StartRouterOver({"--policy", "round_robin"}));
  std::vector<StreamResult> results;
  std::thread load([&] {
    results = RunStreams(
        router_.address, 20, 20, [](int) { return StoryRequest(400); }, std::chrono::seconds(60));
  });
  ASSERT_TRUE(WaitFor(
      [&] { return ScrapeMetric(router_, "strata_router_requests_in_flight").value_or(0) >= 20; },
      std::chrono::seconds(10)));
  workers_[0].process->Signal(SIGTERM);
  ASSERT_TRUE(WaitFor([&] { return ScrapeMetric(router_, HealthySeries(addresses_[0])) == 0.0; },
                      std::chrono::seconds(2)));
  const double drained_ok_before = OkCount(workers_[0]);
  const std::vector<StreamResult> fresh = RunStreams(
      router_.address, 10, 5, [](int) { return StoryRequest(8); }, std::chrono::seconds(30));
  for (const StreamResult& result : fresh) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  }
  load.join();
  for (const StreamResult& result : results) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_TRUE(result.finished);
  }
  EXPECT_EQ(workers_[0].process->WaitForExit(std::chrono::seconds(30)), 0);
  // The fresh calls all went to the other worker (the drained one only
  // finished what it had).
  EXPECT_TRUE(WaitFor([&] { return OkCount(workers_[1]) >= 10; }, std::chrono::seconds(2)));
  EXPECT_LE(drained_ok_before, 20);
}

TEST_F(RouterProcessTest, DrainBackendFinishesItsStreamsSendsNewCallsElsewhereAndItExits) {
  // Two sequences at a time: most of a worker's streams wait in its queue,
  // so the drained one has work for several seconds after the drain.
  ASSERT_NO_FATAL_FAILURE(StartWorkers(2, {"--drain-timeout", "60", "--max-num-seqs", "2"}));
  ASSERT_NO_FATAL_FAILURE(
      StartRouterOver({"--policy", "round_robin", "--admin-listen", "127.0.0.1:0"}));
  const std::string admin_address = AdminAddress(router_);
  ASSERT_FALSE(admin_address.empty()) << router_.process->Stdout();
  auto admin = v1::RouterAdmin::NewStub(
      grpc::CreateChannel(admin_address, grpc::InsecureChannelCredentials()));
  const std::string& drained = addresses_[0];
  const std::string& kept = addresses_[1];

  // 20 long streams, round robin: about half of them on the drained worker.
  std::vector<StreamResult> results;
  std::thread load([&] {
    results = RunStreams(
        router_.address, 20, 20, [](int) { return StoryRequest(400); }, std::chrono::seconds(60));
  });
  int on_drained = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto first = BackendState(*admin, drained);
        const auto second = BackendState(*admin, kept);
        if (!first || !second) return false;
        on_drained = first->in_flight();
        // ... and the worker holds all of its calls (its count is what Drain reports).
        const auto running = ScrapeMetric(workers_[0], "strata_requests_running");
        const auto waiting = ScrapeMetric(workers_[0], "strata_requests_waiting");
        return first->in_flight() + second->in_flight() == 20 &&
               running.value_or(0) + waiting.value_or(0) == on_drained;
      },
      std::chrono::seconds(10)));
  EXPECT_GE(on_drained, 5);

  const CliRun drain = RunCli({"drain", "--router-admin", admin_address, "--backend", drained,
                               "--reason", "rollout test", "--json"},
                              logs_.path(), "cli-drain");
  ASSERT_EQ(drain.exit_code, 0) << drain.err;
  const nlohmann::json answer = nlohmann::json::parse(drain.out, nullptr, false);
  ASSERT_TRUE(answer.is_object()) << drain.out;
  // At most what it held a moment ago (a stream may have ended since).
  EXPECT_GE(answer.value("generate_calls_in_flight", -1), 1);
  EXPECT_LE(answer.value("generate_calls_in_flight", -1), on_drained);
  EXPECT_GE(answer.value("router_calls_in_flight", -1), 1);
  EXPECT_LE(answer.value("router_calls_in_flight", -1), on_drained);
  EXPECT_FALSE(answer.value("already_draining", true));
  EXPECT_EQ(answer.value("drain_timeout_seconds", 0.0), 60.0);
  // The leader turned NOT_SERVING before it answered.
  EXPECT_NE(strata::testing::CheckHealth(drained, "strata.v1.Inference"),
            grpc::health::v1::HealthCheckResponse::SERVING);
  const std::optional<v1::BackendState> state = BackendState(*admin, drained);
  ASSERT_TRUE(state.has_value());
  EXPECT_TRUE(state->draining());
  EXPECT_FALSE(state->available());
  {
    // Again, while it drains: harmless.
    grpc::ClientContext context;
    v1::DrainBackendRequest request;
    request.set_address(drained);
    v1::DrainBackendResponse response;
    const grpc::Status status = admin->DrainBackend(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(response.already_draining());
  }
  {
    grpc::ClientContext context;
    v1::DrainBackendRequest request;
    request.set_address("127.0.0.1:1");
    v1::DrainBackendResponse response;
    EXPECT_EQ(admin->DrainBackend(&context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  const CliRun unknown =
      RunCli({"drain", "--router-admin", admin_address, "--backend", "127.0.0.1:1"}, logs_.path(),
             "cli-unknown");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, ::testing::StartsWith("strata: NOT_FOUND: "));
  EXPECT_EQ(std::count(unknown.err.begin(), unknown.err.end(), '\n'), 1) << unknown.err;

  // Calls sent after the drain all go to the other worker.
  const std::vector<StreamResult> fresh = RunStreams(
      router_.address, 10, 5, [](int) { return StoryRequest(8); }, std::chrono::seconds(30));
  for (const StreamResult& result : fresh) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  }
  load.join();
  for (const StreamResult& result : results) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_TRUE(result.finished);
  }
  EXPECT_EQ(workers_[0].process->WaitForExit(std::chrono::seconds(30)), 0);
  EXPECT_TRUE(OkCountBecomes(workers_[1], 20 - on_drained + 10)) << OkCount(workers_[1]);

  // Directly to a leader, no router involved.
  const CliRun direct =
      RunCli({"drain", "--worker", kept, "--reason", "end of test"}, logs_.path(), "cli-worker");
  EXPECT_EQ(direct.exit_code, 0) << direct.err;
  EXPECT_THAT(direct.out, ::testing::StartsWith(absl::StrCat("draining ", kept, ": 0 calls")));
  EXPECT_EQ(workers_[1].process->WaitForExit(std::chrono::seconds(10)), 0);
  EXPECT_TRUE(WaitFor([&] { return ScrapeMetric(router_, HealthySeries(kept)) == 0.0; },
                      std::chrono::seconds(2)));
}

TEST_F(RouterProcessTest, TenfoldOverloadIsRefusedQuicklyWhileAdmittedCallsComplete) {
  ASSERT_NO_FATAL_FAILURE(StartWorkers(1));
  ASSERT_NO_FATAL_FAILURE(StartRouterOver({"--max-inflight", "8", "--max-queue", "8"}));
  const long rss_before = ResidentKib(router_.process->pid());
  constexpr int kOffered = 80;  // 10x --max-inflight, all at once
  const std::vector<StreamResult> results = RunStreams(
      router_.address, kOffered, kOffered, [](int) { return StoryRequest(200); },
      std::chrono::seconds(60));
  int ok = 0;
  int refused = 0;
  for (const StreamResult& result : results) {
    if (result.status.ok()) {
      ++ok;
      EXPECT_TRUE(result.finished);
    } else {
      EXPECT_EQ(result.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << result.status.error_message();
      EXPECT_THAT(result.status.error_message(), ::testing::HasSubstr("retry in"));
      EXPECT_LT(result.seconds, 1.0);
      ++refused;
    }
  }
  EXPECT_GE(ok, 16);
  EXPECT_GE(refused, kOffered / 2);
  EXPECT_EQ(ok + refused, kOffered);
  EXPECT_EQ(ScrapeMetric(router_, "strata_router_rejections_total{reason=\"overloaded\"}"),
            refused);
  const long rss_after = ResidentKib(router_.process->pid());
  std::printf("overload: %d admitted, %d refused; router RSS %ld -> %ld KiB\n", ok, refused,
              rss_before, rss_after);
  EXPECT_LT(rss_after, rss_before + 64 * 1024);
}

TEST_F(RouterProcessTest, DnsDiscoveryFollowsTheAnswerWithoutDroppingStreams) {
  // Two workers on one port at two loopback addresses, as a headless
  // Service's replicas would be; a hosts file plays the DNS server.
  absl::StatusOr<ServerProcess> first = StartWorker("127.0.0.2:0", "worker-a", logs_.path());
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string port = first->address.substr(first->address.rfind(':') + 1);
  absl::StatusOr<ServerProcess> second =
      StartWorker(absl::StrCat("127.0.0.3:", port), "worker-b", logs_.path());
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(strata::testing::WaitUntilServing(*first).ok());
  ASSERT_TRUE(strata::testing::WaitUntilServing(*second).ok());
  const std::string hosts = logs_.File("hosts");
  const auto answer = [&](const std::string& text) {
    std::ofstream(hosts + ".tmp") << text;
    std::rename((hosts + ".tmp").c_str(), hosts.c_str());
  };
  answer("# test resolver\n127.0.0.2 replicas.test\n");
  absl::StatusOr<ServerProcess> router =
      StartRouter({"--backends", absl::StrCat("dns:///replicas.test:", port), "--dns-hosts-file",
                   hosts, "--dns-refresh-ms", "100", "--policy", "round_robin"},
                  logs_.path());
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_TRUE(WaitFor([&] { return ScrapeMetric(*router, HealthySeries(first->address)) == 1.0; },
                      std::chrono::seconds(10)));
  for (const StreamResult& result : RunStreams(
           router->address, 6, 3, [](int) { return StoryRequest(8); }, std::chrono::seconds(30))) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  }
  EXPECT_TRUE(OkCountBecomes(*first, 6)) << OkCount(*first);
  EXPECT_TRUE(OkCountBecomes(*second, 0)) << OkCount(*second);

  // Long streams on the first worker; then the answer moves to the second.
  std::vector<StreamResult> long_streams;
  std::thread load([&] {
    long_streams = RunStreams(
        router->address, 8, 8, [](int) { return StoryRequest(400); }, std::chrono::seconds(60));
  });
  ASSERT_TRUE(WaitFor(
      [&] { return ScrapeMetric(*router, "strata_router_requests_in_flight").value_or(0) >= 8; },
      std::chrono::seconds(10)));
  answer("127.0.0.3 replicas.test\n");
  EXPECT_TRUE(WaitFor(
      [&] {
        return ScrapeMetric(*router, HealthySeries(second->address)) == 1.0 &&
               !ScrapeMetric(*router, HealthySeries(first->address)).has_value();
      },
      std::chrono::seconds(5)));
  for (const StreamResult& result : RunStreams(
           router->address, 6, 3, [](int) { return StoryRequest(8); }, std::chrono::seconds(30))) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  }
  EXPECT_TRUE(OkCountBecomes(*second, 6)) << OkCount(*second);
  load.join();
  for (const StreamResult& result : long_streams) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_TRUE(result.finished);
  }
  EXPECT_TRUE(OkCountBecomes(*first, 6 + 8)) << OkCount(*first);

  // Both again.
  answer("127.0.0.2 replicas.test\n127.0.0.3 replicas.test\n");
  EXPECT_TRUE(WaitFor([&] { return ScrapeMetric(*router, HealthySeries(first->address)) == 1.0; },
                      std::chrono::seconds(5)));
  for (const StreamResult& result : RunStreams(
           router->address, 6, 1, [](int) { return StoryRequest(8); }, std::chrono::seconds(30))) {
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  }
  EXPECT_TRUE(OkCountBecomes(*first, 6 + 8 + 3)) << OkCount(*first);
  EXPECT_TRUE(OkCountBecomes(*second, 6 + 3)) << OkCount(*second);
}

}  // namespace
}  // namespace strata::router

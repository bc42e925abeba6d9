// The acceptance test for failover, with real processes on
// 127.0.0.1: three workers (bundled model) behind one router; one worker is
// killed with SIGKILL while 200 streams are in flight and more arrive.
// Every stream that had not received a response completes elsewhere; the
// streams that had fail UNAVAILABLE "replica lost mid-stream"; nothing hangs;
// the dead backend is marked unhealthy within 2 s and used again once it is
// restarted on the same address.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/routed_generate_call.h"
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

TEST(RouterFailoverTest, KillingAReplicaMidLoadLosesOnlyTheStreamsItWasServing) {
  TempDir logs;
  std::vector<ServerProcess> workers;
  std::vector<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ServerProcess> worker =
        StartWorker("127.0.0.1:0", absl::StrCat("worker", i), logs.path());
    ASSERT_TRUE(worker.ok()) << worker.status();
    addresses.push_back(worker->address);
    workers.push_back(*std::move(worker));
  }
  for (const ServerProcess& worker : workers) {
    ASSERT_TRUE(strata::testing::WaitUntilServing(worker).ok());
  }
  absl::StatusOr<ServerProcess> router = StartRouter(
      {"--backends", absl::StrJoin(addresses, ","), "--policy", "least_load"}, logs.path());
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_TRUE(strata::testing::WaitUntilServing(*router).ok());
  const std::string victim_healthy =
      absl::StrCat("strata_router_backend_healthy{backend=\"", addresses[0], "\"}");
  ASSERT_TRUE(WaitFor([&] { return ScrapeMetric(*router, victim_healthy) == 1.0; },
                      std::chrono::seconds(10)));

  // 200 streams at once, then 100 more as they finish.
  constexpr int kStreams = 300;
  std::atomic<int> started{0};
  std::vector<StreamResult> results;
  std::thread load([&] {
    results = RunStreams(
        router->address, kStreams, /*threads=*/200, [](int) { return StoryRequest(128); },
        std::chrono::seconds(120), nullptr, &started);
  });
  // Kill once the victim is busy with a full batch.
  const bool busy = WaitFor(
      [&] {
        return started.load() >= 200 &&
               ScrapeMetric(workers[0], "strata_requests_running").value_or(0) > 0;
      },
      std::chrono::seconds(30));
  workers[0].process->Signal(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  const bool ejected = WaitFor([&] { return ScrapeMetric(*router, victim_healthy) == 0.0; },
                               std::chrono::seconds(5));
  const auto ejection_time = std::chrono::steady_clock::now() - killed_at;
  load.join();
  ASSERT_TRUE(busy) << "the victim never ran requests";
  EXPECT_TRUE(ejected);
  EXPECT_LT(ejection_time, std::chrono::seconds(2));

  int completed = 0;
  int lost_mid_stream = 0;
  for (int i = 0; i < kStreams; ++i) {
    const StreamResult& result = results[i];
    if (result.status.ok()) {
      EXPECT_TRUE(result.finished) << "stream " << i;
      ++completed;
      continue;
    }
    // Only a stream that had output may fail, and only as lost mid-stream.
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << "stream " << i << ": " << result.status.error_message();
    EXPECT_THAT(result.status.error_message(),
                ::testing::HasSubstr(RoutedGenerateCall::kLostMidStream));
    EXPECT_GT(result.responses, 0) << "stream " << i << " failed before any output";
    ++lost_mid_stream;
  }
  std::printf("failover: %d completed, %d lost mid-stream, unhealthy after %.0f ms\n", completed,
              lost_mid_stream, std::chrono::duration<double, std::milli>(ejection_time).count());
  EXPECT_GT(completed, kStreams / 2);

  // Restarted on the same address, the worker is used again.
  absl::StatusOr<ServerProcess> restarted = StartWorker(addresses[0], "worker0b", logs.path());
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  ASSERT_TRUE(WaitFor([&] { return ScrapeMetric(*router, victim_healthy) == 1.0; },
                      std::chrono::seconds(30)));
  // (It may sit out the rest of a passive ejection first: at most a second.)
  bool used_again = false;
  for (int round = 0; round < 20 && !used_again; ++round) {
    const std::vector<StreamResult> after = RunStreams(
        router->address, 12, 4, [](int) { return StoryRequest(8); }, std::chrono::seconds(30));
    for (const StreamResult& result : after) {
      EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    }
    used_again = ScrapeMetric(*restarted, "strata_requests_total{code=\"OK\"}").value_or(0) > 0;
    if (!used_again) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(used_again);
}

}  // namespace
}  // namespace strata::router

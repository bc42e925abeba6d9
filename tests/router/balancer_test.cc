// Balancing policies: unit tests over backends with set loads, and
// prefix_affinity end to end over four scripted replicas that send load
// reports (one router, then two routers that share nothing).
#include "router/balancer.h"

#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/backend.h"
#include "tests/router/router_harness.h"

namespace strata::router {
namespace {

using testing::InProcessRouter;
using testing::InProcessRouterOptions;
using testing::RunGenerate;
using testing::ScriptedBackend;
using testing::ScriptedReplicaLoad;
using testing::ServeBackend;
using testing::ServedBackend;

std::vector<std::shared_ptr<Backend>> MakeBackends(int count) {
  std::vector<std::shared_ptr<Backend>> backends;
  for (int i = 0; i < count; ++i) {
    backends.push_back(
        std::make_shared<Backend>(absl::StrCat("10.0.0.", i + 1, ":50051"), nullptr));
  }
  return backends;
}

void Report(Backend& backend, int running, std::vector<uint64_t> hashes = {}, int block_size = 4) {
  BackendLoad load;
  load.reported = true;
  load.running = running;
  load.block_size = block_size;
  std::sort(hashes.begin(), hashes.end());
  load.prefix_hashes = std::make_shared<const std::vector<uint64_t>>(std::move(hashes));
  backend.SetLoad(std::move(load));
}

v1::GenerateRequest TokenPrompt(std::vector<int32_t> ids) {
  v1::GenerateRequest request;
  for (int32_t id : ids) request.mutable_token_ids()->add_ids(id);
  return request;
}

TEST(BalancerTest, UnknownPolicyIsRejectedByName) {
  const auto balancer = CreateBalancer("random");
  ASSERT_FALSE(balancer.ok());
  EXPECT_THAT(std::string(balancer.status().message()), ::testing::HasSubstr("--policy"));
}

TEST(BalancerTest, RoundRobinTakesEachBackendInTurn) {
  auto balancer = *CreateBalancer("round_robin");
  const auto backends = MakeBackends(3);
  std::vector<size_t> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(balancer->Choose(backends, {}).index);
  EXPECT_THAT(picks, ::testing::ElementsAre(0, 1, 2, 0, 1, 2));
}

TEST(BalancerTest, LeastLoadNeverPicksTheMostLoadedOfTwo) {
  auto balancer = *CreateBalancer("least_load");
  const auto backends = MakeBackends(2);
  Report(*backends[0], 10);
  Report(*backends[1], 2);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(balancer->Choose(backends, {}).index, 1u);
  // The router's own in-flight calls count too.
  Report(*backends[1], 0);
  for (int i = 0; i < 12; ++i) backends[1]->CallStarted();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(balancer->Choose(backends, {}).index, 0u);
}

TEST(BalancerTest, PowerOfTwoChoicesAvoidsTheBusiestOfMany) {
  auto balancer = *CreateBalancer("least_load");
  const auto backends = MakeBackends(5);
  for (int i = 0; i < 5; ++i) Report(*backends[i], i == 3 ? 100 : 1);
  for (int i = 0; i < 200; ++i) EXPECT_NE(balancer->Choose(backends, {}).index, 3u);
}

TEST(BalancerTest, PrefixAffinityPrefersTheLongestReportedPrefix) {
  auto balancer = *CreateBalancer("prefix_affinity");
  const auto backends = MakeBackends(3);
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  const std::vector<uint64_t> hashes = PrefixBlockHashes(ids, 4, 10);
  ASSERT_EQ(hashes.size(), 3u);
  Report(*backends[0], 0, {hashes[0]});
  Report(*backends[1], 3, {hashes[0], hashes[1], hashes[2]});
  Report(*backends[2], 0, {});
  const v1::GenerateRequest request = TokenPrompt(ids);
  const Pick pick = balancer->Choose(backends, RouteRequest{&request, ""});
  EXPECT_EQ(pick.index, 1u);
  EXPECT_EQ(pick.reason, PickReason::kPrefixHit);
}

TEST(BalancerTest, PrefixAffinityFallsBackToLeastLoadBeyondTheMargin) {
  BalancerOptions options;
  options.affinity_margin = 4;
  auto balancer = *CreateBalancer("prefix_affinity", options);
  const auto backends = MakeBackends(3);
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<uint64_t> hashes = PrefixBlockHashes(ids, 4, 10);
  Report(*backends[0], 6, hashes);
  Report(*backends[1], 1);
  Report(*backends[2], 3);
  const v1::GenerateRequest request = TokenPrompt(ids);
  // 6 > 1 + 4: too busy for affinity.
  Pick pick = balancer->Choose(backends, RouteRequest{&request, ""});
  EXPECT_EQ(pick.index, 1u);
  EXPECT_EQ(pick.reason, PickReason::kLeastLoad);
  Report(*backends[0], 5, hashes);  // 5 <= 1 + 4
  pick = balancer->Choose(backends, RouteRequest{&request, ""});
  EXPECT_EQ(pick.index, 0u);
  EXPECT_EQ(pick.reason, PickReason::kPrefixHit);
}

TEST(BalancerTest, PrefixAffinitySendsAColdPrefixHomeTheSameWayEverywhere) {
  auto first = *CreateBalancer("prefix_affinity");
  auto second = *CreateBalancer("prefix_affinity");
  const auto backends = MakeBackends(4);
  // The same backend list in another order (another router's view).
  std::vector<std::shared_ptr<Backend>> shuffled = {backends[2], backends[0], backends[3],
                                                    backends[1]};
  std::map<std::string, int> homes;
  for (int group = 0; group < 64; ++group) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 80; ++i) ids.push_back(group * 1000 + i);
    const v1::GenerateRequest request = TokenPrompt(ids);
    const Pick a = first->Choose(backends, RouteRequest{&request, ""});
    const Pick b = second->Choose(shuffled, RouteRequest{&request, ""});
    EXPECT_EQ(a.reason, PickReason::kPrefixHome);
    EXPECT_EQ(backends[a.index]->address(), shuffled[b.index]->address());
    // A different suffix after the first 64 tokens keeps the home.
    ids[70] = -1;
    const v1::GenerateRequest sibling = TokenPrompt(ids);
    EXPECT_EQ(first->Choose(backends, RouteRequest{&sibling, ""}).index, a.index);
    ++homes[backends[a.index]->address()];
  }
  EXPECT_EQ(homes.size(), 4u);  // every backend is somebody's home
}

TEST(BalancerTest, PrefixAffinityHashesTextPromptsByTheirFirstBytes) {
  auto balancer = *CreateBalancer("prefix_affinity");
  const auto backends = MakeBackends(4);
  v1::GenerateRequest request;
  request.set_text(std::string(300, 'x') + "question one");
  v1::GenerateRequest sibling;
  sibling.set_text(std::string(300, 'x') + "question two");
  EXPECT_EQ(balancer->Choose(backends, RouteRequest{&request, ""}).index,
            balancer->Choose(backends, RouteRequest{&sibling, ""}).index);
}

// Four replicas with load reports; 8 groups of requests share long prefixes.
class PrefixAffinityClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 4; ++i) {
      scripted_.push_back(std::make_unique<ScriptedBackend>());
      scripted_.back()->name_ = absl::StrCat("replica", i);
      scripted_.back()->responses_ = 3;
      scripted_.back()->interval_ = std::chrono::milliseconds(2);
      loads_.push_back(std::make_unique<ScriptedReplicaLoad>(*scripted_.back()));
      served_.push_back(ServeBackend(scripted_.back().get(), loads_.back().get()));
      addresses_.push_back(served_.back().address);
    }
    std::mt19937 random(11);
    for (int group = 0; group < kGroups; ++group) {
      std::vector<int32_t> prefix;
      for (int i = 0; i < 256; ++i)
        prefix.push_back(std::uniform_int_distribution<int>(0, 511)(random));
      for (int r = 0; r < kPerGroup; ++r) {
        std::vector<int32_t> ids = prefix;
        for (int i = 0; i < 16; ++i)
          ids.push_back(std::uniform_int_distribution<int>(0, 511)(random));
        traffic_.push_back({group, TokenPrompt(ids)});
      }
    }
    std::shuffle(traffic_.begin(), traffic_.end(), random);
  }

  InProcessRouterOptions Options() {
    InProcessRouterOptions options;
    options.policy = "prefix_affinity";
    return options;
  }

  static constexpr int kGroups = 8;
  static constexpr int kPerGroup = 12;
  std::vector<std::unique_ptr<ScriptedBackend>> scripted_;
  std::vector<std::unique_ptr<ScriptedReplicaLoad>> loads_;
  std::vector<ServedBackend> served_;
  std::vector<std::string> addresses_;
  std::vector<std::pair<int, v1::GenerateRequest>> traffic_;
};

TEST_F(PrefixAffinityClusterTest, AGroupLandsOnOneReplica) {
  InProcessRouter router(addresses_, Options());
  ASSERT_TRUE(router.WaitForHealthy(4));
  std::map<int, std::map<std::string, int>> placements;
  // Four clients at once, as load would come.
  std::mutex mu;
  std::atomic<size_t> next{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (size_t i = next.fetch_add(1); i < traffic_.size(); i = next.fetch_add(1)) {
        const auto outcome = RunGenerate(router.stub(), traffic_[i].second);
        ASSERT_TRUE(outcome.status.ok()) << outcome.status.error_message();
        std::lock_guard<std::mutex> lock(mu);
        ++placements[traffic_[i].first][outcome.responses.at(0).request_id()];
      }
    });
  }
  for (auto& client : clients) client.join();
  for (const auto& [group, replicas] : placements) {
    int most = 0;
    for (const auto& [replica, count] : replicas) most = std::max(most, count);
    EXPECT_GE(most, kPerGroup * 9 / 10)
        << "group " << group << " spread over " << replicas.size() << " replicas";
  }
}

TEST_F(PrefixAffinityClusterTest, TwoRoutersThatShareNothingPickTheSameReplica) {
  InProcessRouter first(addresses_, Options());
  // The second router learns the backends in another order.
  std::vector<std::string> reversed(addresses_.rbegin(), addresses_.rend());
  InProcessRouter second(reversed, Options());
  ASSERT_TRUE(first.WaitForHealthy(4));
  ASSERT_TRUE(second.WaitForHealthy(4));
  int same = 0;
  for (size_t i = 0; i < traffic_.size(); ++i) {
    const auto a = RunGenerate(first.stub(), traffic_[i].second);
    const auto b = RunGenerate(second.stub(), traffic_[i].second);
    ASSERT_TRUE(a.status.ok() && b.status.ok());
    same += a.responses.at(0).request_id() == b.responses.at(0).request_id();
  }
  EXPECT_GE(same, static_cast<int>(traffic_.size()) * 9 / 10);
}

}  // namespace
}  // namespace strata::router

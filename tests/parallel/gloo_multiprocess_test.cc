// Gloo with every rank a forked process on 127.0.0.1, bootstrapped through the
// leader's store as a replica is: collectives on every group, and failure
// semantics when a peer is killed (-9) or stopped.
#include <signal.h>

#include <iostream>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "parallel/bootstrap.h"
#include "tests/parallel/parallel_test_util.h"

namespace strata::parallel {
namespace {

using testing::ForkedRank;
using ::testing::HasSubstr;

BootstrapConfig ConfigFor(int rank, int tp, int pp, int port, absl::Duration collective_timeout) {
  BootstrapFlags flags;
  flags.rank = rank;
  flags.tp = tp;
  flags.pp = pp;
  flags.leader_address = "127.0.0.1:" + std::to_string(port);
  flags.bootstrap_timeout_s = 20;
  flags.collective_timeout_s = absl::ToDoubleSeconds(collective_timeout);
  auto config = ResolveBootstrapConfig(flags, {});
  EXPECT_TRUE(config.ok()) << config.status();
  return *config;
}

RankIdentity IdentityFor(int tp, int pp) {
  return RankIdentity{
      .model_name = "stories260k", .model_hash = "h", .tp = tp, .pp = pp, .world_size = tp * pp};
}

struct Shape {
  int tp;
  int pp;
};

class GlooProcessesTest : public ::testing::TestWithParam<Shape> {};

TEST_P(GlooProcessesTest, EveryGroupWorksAcrossProcesses) {
  const Shape shape = GetParam();
  const int port = testing::FreePort();
  std::vector<std::unique_ptr<ForkedRank>> ranks;
  for (int rank = 0; rank < shape.tp * shape.pp; ++rank) {
    ranks.push_back(std::make_unique<ForkedRank>([=]() -> absl::Status {
      auto session =
          BootstrapSession::Start(ConfigFor(rank, shape.tp, shape.pp, port, absl::Seconds(10)),
                                  IdentityFor(shape.tp, shape.pp));
      if (!session.ok()) return session.status();
      auto groups = ConnectGlooGroups(**session);
      if (!groups.ok()) return groups.status();
      if (absl::Status s = testing::ExerciseGroups(**groups); !s.ok()) return s;
      // Nobody leaves (taking the leader's store along) before all are done.
      return (*groups)->world().Barrier();
    }));
  }
  for (size_t r = 0; r < ranks.size(); ++r) {
    absl::Status status = ranks[r]->Wait(absl::Seconds(60));
    EXPECT_TRUE(status.ok()) << "rank " << r << ": " << status;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GlooProcessesTest,
                         ::testing::Values(Shape{2, 1}, Shape{1, 2}, Shape{2, 2}),
                         [](const auto& info) {
                           return "tp" + std::to_string(info.param.tp) + "pp" +
                                  std::to_string(info.param.pp);
                         });

// Three ranks all-reduce in a loop; after 20 rounds `victim` sends itself
// `signal`. Returns the survivors' statuses and how long after the victim
// stopped they took to report.
struct FailureOutcome {
  std::vector<absl::Status> survivors;
  absl::Duration slowest_report;
};

FailureOutcome RunWithFailingPeer(int victim, int signal, absl::Duration collective_timeout) {
  const int port = testing::FreePort();
  constexpr int kRanks = 3;
  std::vector<std::unique_ptr<ForkedRank>> ranks;
  for (int rank = 0; rank < kRanks; ++rank) {
    ranks.push_back(std::make_unique<ForkedRank>([=]() -> absl::Status {
      auto session = BootstrapSession::Start(ConfigFor(rank, kRanks, 1, port, collective_timeout),
                                             IdentityFor(kRanks, 1));
      if (!session.ok()) return session.status();
      auto groups = ConnectGlooGroups(**session);
      if (!groups.ok()) return groups.status();
      std::vector<float> data(16384);
      for (int round = 0; round < 100000; ++round) {
        if (rank == victim && round == 20) ::raise(signal);
        std::fill(data.begin(), data.end(), 1.0f);
        if (absl::Status s = (*groups)->world().AllReduceSum(data.data(), data.size()); !s.ok()) {
          return s;
        }
      }
      return absl::InternalError("the loop ended without noticing the failed peer");
    }));
  }
  // Wait until the victim is dead or stopped.
  if (signal == SIGSTOP) {
    int wait_status = 0;
    ::waitpid(ranks[victim]->pid(), &wait_status, WUNTRACED);
  } else {
    ranks[victim]->Reap();
  }
  const absl::Time failed_at = absl::Now();

  FailureOutcome outcome;
  for (int rank = 0; rank < kRanks; ++rank) {
    if (rank == victim) continue;
    outcome.survivors.push_back(ranks[rank]->Wait(absl::Seconds(30)));
    std::cout << "rank " << rank << " reported: " << outcome.survivors.back() << "\n";
  }
  outcome.slowest_report = absl::Now() - failed_at;
  return outcome;  // ~ForkedRank kills (and reaps) the stopped victim
}

TEST(GlooFailureTest, KilledFollowerMakesEveryOtherRankFailNamingIt) {
  const absl::Duration timeout = absl::Seconds(5);
  FailureOutcome outcome = RunWithFailingPeer(/*victim=*/2, SIGKILL, timeout);
  for (const absl::Status& status : outcome.survivors) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("rank 2 lost"));
  }
  // A death is seen at once (closed connections), well before the timeout.
  EXPECT_LT(outcome.slowest_report, timeout);
}

TEST(GlooFailureTest, KilledLeaderIsNamedByEveryFollower) {
  const absl::Duration timeout = absl::Seconds(5);
  FailureOutcome outcome = RunWithFailingPeer(/*victim=*/0, SIGKILL, timeout);
  for (const absl::Status& status : outcome.survivors) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("rank 0 (leader) lost"));
  }
  EXPECT_LT(outcome.slowest_report, timeout);
}

TEST(GlooFailureTest, StoppedPeerIsNamedOnceTheCollectiveTimeoutPasses) {
  const absl::Duration timeout = absl::Seconds(2);
  FailureOutcome outcome = RunWithFailingPeer(/*victim=*/1, SIGSTOP, timeout);
  for (const absl::Status& status : outcome.survivors) {
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("rank 1 did not respond"));
  }
  // Timeout, then the diagnosis grace (1 s); the leader's report also waits
  // for its store to drain (up to 3 s, the stopped rank never leaves).
  EXPECT_GE(outcome.slowest_report, timeout - absl::Milliseconds(200));
  EXPECT_LT(outcome.slowest_report, timeout + absl::Seconds(6));
}

}  // namespace
}  // namespace strata::parallel

#include "parallel/bootstrap.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/parallel/parallel_test_util.h"

namespace strata::parallel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::RunAsThreads;

std::string ErrorOf(const absl::StatusOr<BootstrapConfig>& config) {
  return config.ok() ? "(ok)" : std::string(config.status().message());
}

// --- ResolveBootstrapConfig: flags ----------------------------------------

TEST(ResolveBootstrapConfigTest, NoFlagsNoEnvironmentIsOneProcess) {
  auto config = ResolveBootstrapConfig(BootstrapFlags{}, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source, BootstrapSource::kSingleProcess);
  EXPECT_EQ(config->world_size, 1);
  EXPECT_EQ(config->rank, 0);
  EXPECT_EQ(config->tp, 1);
  EXPECT_EQ(config->pp, 1);
}

TEST(ResolveBootstrapConfigTest, SeveralRanksWithoutRankOrLwsIsRefused) {
  BootstrapFlags flags;
  flags.tp = 2;
  auto config = ResolveBootstrapConfig(flags, {});
  EXPECT_THAT(ErrorOf(config), HasSubstr("needs --rank and --leader-address"));
}

TEST(ResolveBootstrapConfigTest, RankWithTpAndPpFromFlags) {
  BootstrapFlags flags;
  flags.rank = 3;
  flags.tp = 2;
  flags.pp = 2;
  flags.pp_layers = "3,2";
  flags.leader_address = "10.0.0.1:29500";
  flags.collective_timeout_s = 2.5;
  auto config = ResolveBootstrapConfig(flags, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source, BootstrapSource::kFlags);
  EXPECT_EQ(config->world_size, 4);
  EXPECT_EQ(config->leader_address, "10.0.0.1:29500");
  EXPECT_THAT(config->pp_layers, ElementsAre(3, 2));
  EXPECT_EQ(config->collective_timeout, absl::Milliseconds(2500));
  EXPECT_EQ(config->parallel().stage(), 1);
  EXPECT_EQ(config->parallel().tp_rank(), 1);
}

TEST(ResolveBootstrapConfigTest, WorldSizeAloneMeansTensorParallelOnly) {
  BootstrapFlags flags;
  flags.rank = 1;
  flags.world_size = 4;
  flags.leader_address = "h:1";
  auto config = ResolveBootstrapConfig(flags, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->tp, 4);
  EXPECT_EQ(config->pp, 1);
}

TEST(ResolveBootstrapConfigTest, PpAloneTakesTpFromTheWorldSize) {
  BootstrapFlags flags;
  flags.rank = 1;
  flags.world_size = 6;
  flags.pp = 3;
  flags.leader_address = "h:1";
  auto config = ResolveBootstrapConfig(flags, {});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->tp, 2);
}

TEST(ResolveBootstrapConfigTest, TpTimesPpMustMatchTheWorldSize) {
  BootstrapFlags flags;
  flags.rank = 0;
  flags.world_size = 6;
  flags.tp = 2;
  flags.pp = 2;
  flags.leader_address = "h:1";
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(flags, {})),
              HasSubstr("--tp=2 x --pp=2 = 4 ranks, but the world size is 6"));
}

TEST(ResolveBootstrapConfigTest, RankOutsideTheWorldIsRefused) {
  BootstrapFlags flags;
  flags.rank = 4;
  flags.tp = 2;
  flags.pp = 2;
  flags.leader_address = "h:1";
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(flags, {})),
              HasSubstr("rank 4 is outside the world [0, 4)"));
}

TEST(ResolveBootstrapConfigTest, SeveralRanksNeedALeaderAddressWithAPort) {
  BootstrapFlags flags;
  flags.rank = 1;
  flags.world_size = 2;
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(flags, {})), HasSubstr("--leader-address"));
  flags.leader_address = "h:0";
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(flags, {})), HasSubstr("needs a fixed port"));
  flags.leader_address = "no-port";
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(flags, {})), HasSubstr("must be host:port"));
}

TEST(ResolveBootstrapConfigTest, PpLayersMustHaveOneEntryPerStage) {
  BootstrapFlags flags;
  flags.rank = 0;
  flags.pp = 2;
  flags.tp = 1;
  flags.pp_layers = "1,2,2";
  flags.leader_address = "h:1";
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(flags, {})),
              HasSubstr("--pp-layers 1,2,2 has 3 entries but --pp=2"));
}

TEST(ResolveBootstrapConfigTest, TimeoutsMustBePositive) {
  BootstrapFlags flags;
  flags.collective_timeout_s = 0;
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(flags, {})), HasSubstr("--collective-timeout"));
}

// --- ResolveBootstrapConfig: LeaderWorkerSet --------------------------------

Environment Lws(const std::string& index, const std::string& size, const std::string& leader) {
  return {{"LWS_WORKER_INDEX", index}, {"LWS_GROUP_SIZE", size}, {"LWS_LEADER_ADDRESS", leader}};
}

TEST(ResolveBootstrapConfigTest, LeaderWorkerSetGivesRankWorldAndLeader) {
  BootstrapFlags flags;
  flags.tp = 2;
  flags.pp = 2;
  auto config = ResolveBootstrapConfig(flags, Lws("3", "4", "strata-0.strata.ns.svc"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source, BootstrapSource::kLeaderWorkerSet);
  EXPECT_EQ(config->rank, 3);
  EXPECT_EQ(config->world_size, 4);
  EXPECT_EQ(config->leader_address, "strata-0.strata.ns.svc:29500");
}

TEST(ResolveBootstrapConfigTest, RanksPerPodMultiplyTheWorkerIndex) {
  BootstrapFlags flags;
  flags.ranks_per_pod = 4;
  flags.local_rank = 3;
  flags.tp = 4;
  flags.pp = 2;
  flags.leader_port = 1234;
  auto config = ResolveBootstrapConfig(flags, Lws("1", "2", "leader"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rank, 7);  // 1 * 4 + 3
  EXPECT_EQ(config->world_size, 8);
  EXPECT_EQ(config->leader_address, "leader:1234");
}

TEST(ResolveBootstrapConfigTest, LeaderAddressWithAPortIsKept) {
  auto config = ResolveBootstrapConfig(BootstrapFlags{}, Lws("0", "2", "10.1.2.3:7000"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->leader_address, "10.1.2.3:7000");
  EXPECT_EQ(config->tp, 2);
}

TEST(ResolveBootstrapConfigTest, ExplicitRankFlagWinsOverTheEnvironment) {
  BootstrapFlags flags;
  flags.rank = 1;
  flags.world_size = 2;
  flags.leader_address = "127.0.0.1:5000";
  auto config = ResolveBootstrapConfig(flags, Lws("0", "8", "elsewhere"));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->source, BootstrapSource::kFlags);
  EXPECT_EQ(config->rank, 1);
  EXPECT_EQ(config->world_size, 2);
}

TEST(ResolveBootstrapConfigTest, IncompleteOrBadLwsEnvironmentNamesTheVariable) {
  Environment env = {{"LWS_WORKER_INDEX", "1"}};
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(BootstrapFlags{}, env)),
              HasSubstr("LWS_GROUP_SIZE is not set"));
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(BootstrapFlags{}, Lws("x", "2", "l"))),
              HasSubstr("LWS_WORKER_INDEX=\"x\" is not an integer"));
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(BootstrapFlags{}, Lws("2", "2", "l"))),
              HasSubstr("LWS_WORKER_INDEX=2 must be in [0, LWS_GROUP_SIZE=2)"));
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(BootstrapFlags{}, Lws("0", "2", ""))),
              HasSubstr("LWS_LEADER_ADDRESS is not set"));
}

TEST(ResolveBootstrapConfigTest, LwsWorldMustMatchTpTimesPpAndWorldSize) {
  BootstrapFlags flags;
  flags.tp = 2;
  flags.pp = 2;
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(flags, Lws("0", "2", "l"))),
              HasSubstr("but the world size is 2"));
  BootstrapFlags sized;
  sized.world_size = 3;
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(sized, Lws("0", "2", "l"))),
              HasSubstr("--world-size=3 disagrees with the LeaderWorkerSet"));
  BootstrapFlags local;
  local.ranks_per_pod = 2;
  local.local_rank = 2;
  EXPECT_THAT(ErrorOf(ResolveBootstrapConfig(local, Lws("0", "2", "l"))),
              HasSubstr("--local-rank=2 must be in [0, --ranks-per-pod=2)"));
}

// --- Identity comparison ------------------------------------------------------

TEST(DescribeIdentityMismatchTest, NamesTheFirstDifferingFieldAndBothValues) {
  RankIdentity leader{
      .model_name = "stories260k", .model_hash = "abc", .tp = 2, .pp = 2, .world_size = 4};
  RankIdentity same = leader;
  EXPECT_EQ(DescribeIdentityMismatch(leader, same, 1), "");
  RankIdentity other = leader;
  other.pp = 1;
  EXPECT_EQ(DescribeIdentityMismatch(leader, other, 3),
            "pp differs: leader (rank 0) has \"2\", rank 3 has \"1\"");
  other = leader;
  other.build_version = "0.0.9";
  EXPECT_THAT(DescribeIdentityMismatch(leader, other, 1), HasSubstr("build_version differs"));
}

// --- Sessions: handshake over a real store, ranks as threads ------------------

BootstrapConfig SessionConfig(int rank, int tp, int pp, int port) {
  BootstrapConfig config;
  config.source = BootstrapSource::kFlags;
  config.rank = rank;
  config.tp = tp;
  config.pp = pp;
  config.world_size = tp * pp;
  config.leader_address = "127.0.0.1:" + std::to_string(port);
  config.bootstrap_timeout = absl::Seconds(10);
  config.collective_timeout = absl::Seconds(10);
  return config;
}

RankIdentity IdentityFor(int tp, int pp) {
  return RankIdentity{
      .model_name = "stories260k", .model_hash = "h1", .tp = tp, .pp = pp, .world_size = tp * pp};
}

TEST(BootstrapSessionTest, RanksStartingInAnyOrderJoinAndCommunicate) {
  const int port = testing::FreePort();
  auto results = RunAsThreads(4, [&](int rank) -> absl::Status {
    // Followers first; the leader comes up last.
    if (rank == 0) absl::SleepFor(absl::Milliseconds(300));
    auto session = BootstrapSession::Start(SessionConfig(rank, 2, 2, port), IdentityFor(2, 2));
    if (!session.ok()) return session.status();
    auto groups = ConnectGlooGroups(**session);
    if (!groups.ok()) return groups.status();
    absl::Status exercised = testing::ExerciseGroups(**groups);
    // The leader's store must outlive the others' use of it.
    absl::Status done = (*groups)->world().Barrier();
    return exercised.ok() ? done : exercised;
  });
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

TEST(BootstrapSessionTest, MismatchedModelIsRefusedOnBothSidesNamingTheField) {
  const int port = testing::FreePort();
  auto results = RunAsThreads(3, [&](int rank) -> absl::Status {
    RankIdentity identity = IdentityFor(3, 1);
    if (rank == 2) identity.model_hash = "h2";
    return BootstrapSession::Start(SessionConfig(rank, 3, 1, port), identity).status();
  });
  EXPECT_EQ(results[0].code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(results[0].message()),
              HasSubstr("rank 2 refused: model_hash differs: leader (rank 0) has \"h1\", rank 2 "
                        "has \"h2\""));
  EXPECT_EQ(results[2].code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(results[2].message()), HasSubstr("model_hash differs"));
  // A rank that matched is stopped too, told why.
  EXPECT_EQ(results[1].code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(results[1].message()), HasSubstr("leader aborted start-up: rank 2"));
}

TEST(BootstrapSessionTest, DifferentTpIsRefused) {
  const int port = testing::FreePort();
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    RankIdentity identity = IdentityFor(2, 1);
    if (rank == 1) identity.tp = 1;
    return BootstrapSession::Start(SessionConfig(rank, 2, 1, port), identity).status();
  });
  EXPECT_THAT(std::string(results[0].message()), HasSubstr("tp differs"));
  EXPECT_THAT(std::string(results[1].message()), HasSubstr("tp differs"));
}

TEST(BootstrapSessionTest, FollowerWithoutALeaderGivesUpAfterTheBootstrapTimeout) {
  BootstrapConfig config = SessionConfig(1, 2, 1, testing::FreePort());
  config.bootstrap_timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  auto session = BootstrapSession::Start(config, IdentityFor(2, 1));
  EXPECT_EQ(session.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(session.status().message()),
              HasSubstr("rank 1 could not reach the leader within 500ms (--bootstrap-timeout)"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST(BootstrapSessionTest, LeaderNamesTheRanksThatNeverJoined) {
  const int port = testing::FreePort();
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    BootstrapConfig config = SessionConfig(rank, 3, 1, port);  // rank 2 never starts
    config.bootstrap_timeout = absl::Milliseconds(600);
    return BootstrapSession::Start(config, IdentityFor(3, 1)).status();
  });
  EXPECT_EQ(results[0].code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(results[0].message()), HasSubstr("rank 2 did not join the leader"));
  EXPECT_THAT(std::string(results[1].message()), HasSubstr("rank 2 did not join"));
}

TEST(BootstrapSessionTest, SecondProcessClaimingARankIsRefused) {
  const int port = testing::FreePort();
  std::vector<std::unique_ptr<BootstrapSession>> sessions(2);
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    auto session = BootstrapSession::Start(SessionConfig(rank, 2, 1, port), IdentityFor(2, 1));
    if (!session.ok()) return session.status();
    sessions[rank] = *std::move(session);
    return absl::OkStatus();
  });
  ASSERT_TRUE(results[0].ok()) << results[0];
  ASSERT_TRUE(results[1].ok()) << results[1];
  auto duplicate = BootstrapSession::Start(SessionConfig(1, 2, 1, port), IdentityFor(2, 1));
  EXPECT_EQ(duplicate.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(duplicate.status().message()), HasSubstr("rank 1 is already taken"));
  sessions[1].reset();  // followers leave before the leader
  const absl::Time start = absl::Now();
  sessions[0].reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "nobody left for the leader to wait for";
}

TEST(BootstrapSessionTest, SingleProcessNeedsNoPeers) {
  auto config = ResolveBootstrapConfig(BootstrapFlags{}, {});
  ASSERT_TRUE(config.ok());
  auto session = BootstrapSession::Start(*config, IdentityFor(1, 1));
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_NE((*session)->leader_address(), "127.0.0.1:0");
  auto groups = ConnectGlooGroups(**session);
  ASSERT_TRUE(groups.ok()) << groups.status();
  EXPECT_TRUE(testing::ExerciseGroups(**groups).ok());
  EXPECT_EQ((*groups)->next_stage(), nullptr);
}

}  // namespace
}  // namespace strata::parallel

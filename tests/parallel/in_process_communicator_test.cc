#include "parallel/in_process_communicator.h"

#include <atomic>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "parallel/communicator_groups.h"
#include "tests/parallel/parallel_test_util.h"

namespace strata::parallel {
namespace {

using testing::ExerciseGroups;
using ::testing::HasSubstr;
using testing::RunAsThreads;

GroupSpec WorldOf(int n) {
  GroupSpec spec{"world", {}};
  for (int r = 0; r < n; ++r) spec.world_ranks.push_back(r);
  return spec;
}

TEST(InProcessCommunicatorTest, FourThreadsAllReduceAllGatherBroadcastAndBarrier) {
  InProcessWorld world(4, absl::Seconds(10));
  auto results = RunAsThreads(4, [&](int rank) -> absl::Status {
    auto communicator = world.Join(WorldOf(4), rank);
    if (!communicator.ok()) return communicator.status();
    Communicator& c = **communicator;
    for (int round = 0; round < 20; ++round) {
      std::vector<float> data = {1.0f * rank, 2.0f, static_cast<float>(round)};
      if (auto s = c.AllReduceSum(data.data(), data.size()); !s.ok()) return s;
      if (data[0] != 6.0f || data[1] != 8.0f || data[2] != 4.0f * round) {
        return absl::InternalError("all_reduce sum");
      }
      const float mine[2] = {static_cast<float>(rank), static_cast<float>(round)};
      float gathered[8];
      if (auto s = c.AllGather(mine, 2, gathered); !s.ok()) return s;
      for (int r = 0; r < 4; ++r) {
        if (gathered[2 * r] != r || gathered[2 * r + 1] != round) {
          return absl::InternalError("all_gather order");
        }
      }
      int value = rank == 2 ? 1000 + round : -1;
      if (auto s = c.Broadcast(&value, sizeof(value), 2); !s.ok()) return s;
      if (value != 1000 + round) return absl::InternalError("broadcast");
      if (auto s = c.Barrier(); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

TEST(InProcessCommunicatorTest, GroupsOfTwoByTwoPassTheSharedExercise) {
  InProcessWorld world(4, absl::Seconds(10));
  auto results = RunAsThreads(4, [&](int rank) -> absl::Status {
    auto config = ParallelConfig::Create(2, 2, rank);
    auto factory = world.FactoryFor(rank);
    auto groups = CommunicatorGroups::Create(*config, *factory);
    if (!groups.ok()) return groups.status();
    return ExerciseGroups(**groups);
  });
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
}

TEST(InProcessCommunicatorTest, SendAndRecvKeepOrderPerPeer) {
  InProcessWorld world(2, absl::Seconds(10));
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    auto c = world.Join(WorldOf(2), rank);
    if (!c.ok()) return c.status();
    for (int i = 0; i < 100; ++i) {
      if (rank == 0) {
        if (auto s = (*c)->Send(&i, sizeof(i), 1); !s.ok()) return s;
      } else {
        int got = -1;
        if (auto s = (*c)->Recv(&got, sizeof(got), 0); !s.ok()) return s;
        if (got != i) return absl::InternalError(absl::StrCat("got ", got, " want ", i));
      }
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(results[0].ok()) << results[0];
  EXPECT_TRUE(results[1].ok()) << results[1];
}

TEST(InProcessCommunicatorTest, RecvOfTheWrongSizeIsAnError) {
  InProcessWorld world(2, absl::Seconds(10));
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    auto c = world.Join(WorldOf(2), rank);
    int64_t value = 7;
    if (rank == 0) return (*c)->Send(&value, sizeof(value), 1);
    int32_t small = 0;
    return (*c)->Recv(&small, sizeof(small), 0);
  });
  EXPECT_TRUE(results[0].ok());
  EXPECT_EQ(results[1].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(results[1].message()), HasSubstr("expected 4 bytes from rank 0"));
}

TEST(InProcessCommunicatorTest, MissingMemberTimesOutNamingIt) {
  InProcessWorld world(3, absl::Milliseconds(200));
  // Ranks 0 and 1 all-reduce; rank 2 never shows up.
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    auto c = world.Join(WorldOf(3), rank);
    float x = 1.0f;
    return (*c)->AllReduceSum(&x, 1);
  });
  for (const absl::Status& status : results) {
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(std::string(status.message()), HasSubstr("waiting for ranks 2"));
  }
}

TEST(InProcessCommunicatorTest, LostRankFailsPendingAndLaterCallsNamingIt) {
  InProcessWorld world(3, absl::Seconds(30));
  std::atomic<int> waiting{0};
  std::thread killer([&] {
    while (waiting.load() < 2) std::this_thread::yield();
    absl::SleepFor(absl::Milliseconds(20));
    world.MarkRankLostForTest(2);
  });
  const absl::Time start = absl::Now();
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    auto c = world.Join(WorldOf(3), rank);
    float x = 1.0f;
    ++waiting;
    absl::Status first = (*c)->AllReduceSum(&x, 1);
    absl::Status later = (*c)->Barrier();
    if (later.code() != first.code()) return absl::InternalError("later call did not fail alike");
    return first;
  });
  killer.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "a lost rank must not wait for the timeout";
  for (const absl::Status& status : results) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(status.message()), HasSubstr("rank 2 lost"));
  }
}

TEST(InProcessCommunicatorTest, MismatchedCollectivesAreReported) {
  InProcessWorld world(2, absl::Seconds(5));
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    auto c = world.Join(WorldOf(2), rank);
    std::vector<float> data(rank == 0 ? 4 : 8, 1.0f);
    return (*c)->AllReduceSum(data.data(), data.size());
  });
  int mismatches = 0;
  for (const absl::Status& status : results) {
    ASSERT_FALSE(status.ok());
    if (absl::StrContains(status.message(), "while others called")) ++mismatches;
  }
  EXPECT_GE(mismatches, 1);
}

TEST(InProcessCommunicatorTest, JoinRefusesNonMembersAndConflictingGroups) {
  InProcessWorld world(4, absl::Seconds(1));
  EXPECT_EQ(world.Join(GroupSpec{"g", {0, 1}}, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(world.Join(GroupSpec{"g", {0, 1}}, 0).ok());
  auto conflicting = world.Join(GroupSpec{"g", {1, 2}}, 1);
  EXPECT_THAT(std::string(conflicting.status().message()), HasSubstr("exists as g [0,1]"));
}

TEST(InProcessCommunicatorTest, SendToSelfIsRefused) {
  InProcessWorld world(2, absl::Seconds(1));
  auto c = world.Join(WorldOf(2), 0);
  int x = 0;
  EXPECT_EQ((*c)->Send(&x, sizeof(x), 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*c)->Recv(&x, sizeof(x), 5).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata::parallel

// Gloo with ranks as threads of this process (each with its own store client,
// TCP device and connections, as separate processes would have).
#include "parallel/gloo_communicator.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "parallel/communicator_groups.h"
#include "tests/parallel/parallel_test_util.h"

namespace strata::parallel {
namespace {

using testing::ExerciseGroups;
using ::testing::HasSubstr;
using testing::RunAsThreads;

class GlooThreadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = TcpStoreServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // A connected store client with its presence registered as `rank`.
  absl::StatusOr<std::unique_ptr<TcpStore>> StoreFor(int rank) {
    auto store = TcpStore::Connect("127.0.0.1:" + std::to_string(server_->port()));
    if (!store.ok()) return store.status();
    if (auto s = (*store)->RegisterPresence(rank); !s.ok()) return s;
    return store;
  }

  static GlooOptions FastOptions() {
    GlooOptions options;
    options.collective_timeout = absl::Seconds(10);
    options.bootstrap_timeout = absl::Seconds(10);
    options.diagnosis_grace = absl::Milliseconds(300);
    return options;
  }

  std::unique_ptr<TcpStoreServer> server_;
};

struct Shape {
  int tp;
  int pp;
};

class GlooGroupsTest : public GlooThreadsTest, public ::testing::WithParamInterface<Shape> {};

TEST_P(GlooGroupsTest, EveryGroupWorksAcrossRankThreads) {
  const Shape shape = GetParam();
  auto results = RunAsThreads(shape.tp * shape.pp, [&](int rank) -> absl::Status {
    auto store = StoreFor(rank);
    if (!store.ok()) return store.status();
    auto factory = GlooCommunicatorFactory::Create(store->get(), rank, FastOptions());
    if (!factory.ok()) return factory.status();
    auto config = ParallelConfig::Create(shape.tp, shape.pp, rank);
    auto groups = CommunicatorGroups::Create(*config, **factory);
    if (!groups.ok()) return groups.status();
    return ExerciseGroups(**groups);
  });
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r];
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GlooGroupsTest,
                         ::testing::Values(Shape{2, 1}, Shape{1, 2}, Shape{2, 2}, Shape{4, 1}),
                         [](const auto& info) {
                           return "tp" + std::to_string(info.param.tp) + "pp" +
                                  std::to_string(info.param.pp);
                         });

TEST_F(GlooThreadsTest, SingleMemberGroupNeedsNoPeers) {
  auto store = StoreFor(0);
  ASSERT_TRUE(store.ok());
  auto factory = GlooCommunicatorFactory::Create(store->get(), 0, FastOptions());
  ASSERT_TRUE(factory.ok()) << factory.status();
  auto c = (*factory)->Create(GroupSpec{"solo", {0}});
  ASSERT_TRUE(c.ok()) << c.status();
  float data[3] = {1, 2, 3};
  float gathered[3];
  EXPECT_TRUE((*c)->AllReduceSum(data, 3).ok());
  EXPECT_EQ(data[2], 3.0f);
  EXPECT_TRUE((*c)->AllGather(data, 3, gathered).ok());
  EXPECT_EQ(gathered[1], 2.0f);
  EXPECT_TRUE((*c)->Broadcast(data, sizeof(data), 0).ok());
  EXPECT_TRUE((*c)->Barrier().ok());
  EXPECT_EQ((*c)->Send(data, 4, 0).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GlooThreadsTest, JoiningAGroupWhoseMembersNeverComeTimesOut) {
  auto store = StoreFor(0);
  GlooOptions options = FastOptions();
  options.bootstrap_timeout = absl::Milliseconds(300);
  auto factory = GlooCommunicatorFactory::Create(store->get(), 0, options);
  ASSERT_TRUE(factory.ok());
  auto c = (*factory)->Create(GroupSpec{"pair", {0, 1}});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("pair [0,1]"));
}

TEST_F(GlooThreadsTest, AllReduceOfManySizesAndBuffersStaysCorrect) {
  // More distinct (buffer, size) pairs than the prepared-options cache holds.
  auto results = RunAsThreads(2, [&](int rank) -> absl::Status {
    auto store = StoreFor(rank);
    auto factory = GlooCommunicatorFactory::Create(store->get(), rank, FastOptions());
    auto c = (*factory)->Create(GroupSpec{"sizes", {0, 1}});
    if (!c.ok()) return c.status();
    for (int round = 0; round < 2; ++round) {
      for (size_t n = 1; n <= 40; ++n) {
        std::vector<float> data(n * 3, static_cast<float>(rank + 1));
        if (auto s = (*c)->AllReduceSum(data.data(), data.size()); !s.ok()) return s;
        for (float v : data) {
          if (v != 3.0f) return absl::InternalError(absl::StrCat("n=", n, " got ", v));
        }
      }
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(results[0].ok()) << results[0];
  EXPECT_TRUE(results[1].ok()) << results[1];
}

TEST_F(GlooThreadsTest, MemberThatNeverCallsIsNamedAfterTheTimeout) {
  GlooOptions options = FastOptions();
  options.collective_timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  std::vector<absl::Duration> elapsed(3);
  auto results = RunAsThreads(3, [&](int rank) -> absl::Status {
    auto store = StoreFor(rank);
    auto factory = GlooCommunicatorFactory::Create(store->get(), rank, options);
    auto c = (*factory)->Create(GroupSpec{"world", {0, 1, 2}});
    if (!c.ok()) return c.status();
    if (rank == 2) {
      // Alive (presence held) but never joins the all-reduce.
      absl::SleepFor(absl::Seconds(2));
      return absl::OkStatus();
    }
    std::vector<float> data(1024, 1.0f);
    absl::Status status = (*c)->AllReduceSum(data.data(), data.size());
    elapsed[rank] = absl::Now() - start;
    absl::Status again = (*c)->AllReduceSum(data.data(), data.size());
    if (again != status) return absl::InternalError("a broken communicator must stay broken");
    return status;
  });
  for (int rank : {0, 1}) {
    EXPECT_EQ(results[rank].code(), absl::StatusCode::kDeadlineExceeded) << results[rank];
    EXPECT_THAT(std::string(results[rank].message()), HasSubstr("rank 2 did not respond"));
    EXPECT_LT(elapsed[rank], absl::Seconds(3));
  }
}

}  // namespace
}  // namespace strata::parallel

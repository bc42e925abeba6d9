#include "parallel/tcp_store.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/parallel/parallel_test_util.h"

namespace strata::parallel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string AddressOf(const TcpStoreServer& server) {
  return "127.0.0.1:" + std::to_string(server.port());
}

class TcpStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = TcpStoreServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
  }

  std::unique_ptr<TcpStore> Client() {
    auto client = TcpStore::Connect(AddressOf(*server_), {.connect_timeout = absl::Seconds(5)});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  std::unique_ptr<TcpStoreServer> server_;
};

TEST_F(TcpStoreTest, SetThenGetReturnsTheBytes) {
  auto client = Client();
  const std::string binary("a\0b\xff", 4);
  ASSERT_TRUE(client->Set("key", binary).ok());
  auto value = client->Get("key", absl::Seconds(1));
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, binary);
  ASSERT_TRUE(client->Set("key", "overwritten").ok());
  EXPECT_EQ(*client->Get("key", absl::Seconds(1)), "overwritten");
}

TEST_F(TcpStoreTest, GetBlocksUntilAnotherClientSetsTheKey) {
  auto reader = Client();
  auto writer = Client();
  std::thread later([&] {
    absl::SleepFor(absl::Milliseconds(100));
    ASSERT_TRUE(writer->Set("late", "value").ok());
  });
  const absl::Time start = absl::Now();
  auto value = reader->Get("late", absl::Seconds(5));
  later.join();
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(*value, "value");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(90));
}

TEST_F(TcpStoreTest, GetOfAMissingKeyTimesOutNamingIt) {
  auto client = Client();
  auto value = client->Get("never", absl::Milliseconds(100));
  EXPECT_EQ(value.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(value.status().message()), HasSubstr("\"never\""));
}

TEST_F(TcpStoreTest, WaitNamesTheMissingKeys) {
  auto client = Client();
  ASSERT_TRUE(client->Set("a", "1").ok());
  EXPECT_TRUE(client->Wait({"a"}, absl::Milliseconds(100)).ok());
  absl::Status status = client->Wait({"a", "b", "c"}, absl::Milliseconds(100));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(status.message()), HasSubstr("b, c"));
}

TEST_F(TcpStoreTest, AddIsAtomicAcrossClients) {
  auto results = testing::RunAsThreads(4, [&](int) -> absl::Status {
    auto client = Client();
    for (int i = 0; i < 50; ++i) {
      auto value = client->Add("counter", 1);
      if (!value.ok()) return value.status();
    }
    return absl::OkStatus();
  });
  for (const auto& status : results) EXPECT_TRUE(status.ok()) << status;
  auto client = Client();
  EXPECT_EQ(*client->Add("counter", 0), 200);
}

TEST_F(TcpStoreTest, ClientThatSaysGoodbyeIsNotLost) {
  {
    auto client = Client();
    ASSERT_TRUE(client->RegisterPresence(3).ok());
  }
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_THAT(server_->LostRanks(), IsEmpty());
}

TEST_F(TcpStoreTest, ProcessThatDiesIsReportedLost) {
  const std::string address = AddressOf(*server_);
  testing::ForkedRank child([&]() -> absl::Status {
    auto client = TcpStore::Connect(address);
    if (!client.ok()) return client.status();
    if (auto s = (*client)->RegisterPresence(2); !s.ok()) return s;
    ::raise(SIGKILL);  // dies without a goodbye
    return absl::OkStatus();
  });
  child.Reap();
  auto observer = Client();
  std::vector<int> lost;
  for (int i = 0; i < 100 && lost.empty(); ++i) {
    lost = *observer->LostRanks();
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(lost, ElementsAre(2));
  EXPECT_THAT(server_->LostRanks(), ElementsAre(2));
}

TEST_F(TcpStoreTest, ClientNoticesWhenTheServerGoesAway) {
  auto client = Client();
  ASSERT_TRUE(client->RegisterPresence(1).ok());
  server_->Stop();
  auto lost = client->LostRanks();
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(lost.status().message()), HasSubstr("the leader, rank 0"));
  EXPECT_FALSE(client->Set("k", "v").ok());
}

TEST_F(TcpStoreTest, StopWakesBlockedGets) {
  auto client = Client();
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(100));
    server_->Stop();
  });
  const absl::Time start = absl::Now();
  auto value = client->Get("never", absl::Seconds(30));
  stopper.join();
  EXPECT_FALSE(value.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(TcpStoreConnectTest, RetriesUntilTheServerStarts) {
  const int port = testing::FreePort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  std::unique_ptr<TcpStoreServer> server;
  std::thread starter([&] {
    absl::SleepFor(absl::Milliseconds(300));
    auto started = TcpStoreServer::Start(address);
    ASSERT_TRUE(started.ok()) << started.status();
    server = *std::move(started);
  });
  auto client = TcpStore::Connect(address, {.connect_timeout = absl::Seconds(10)});
  starter.join();
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->Set("k", "v").ok());
  EXPECT_EQ((*client)->local_host(), "127.0.0.1");
}

TEST(TcpStoreConnectTest, GivesUpAfterTheConnectTimeoutNamingTheAddress) {
  const std::string address = "127.0.0.1:" + std::to_string(testing::FreePort());
  const absl::Time start = absl::Now();
  auto client = TcpStore::Connect(address, {.connect_timeout = absl::Milliseconds(500)});
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_EQ(client.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(client.status().message()), HasSubstr(address));
  EXPECT_THAT(std::string(client.status().message()), HasSubstr("Connection refused"));
  EXPECT_GE(elapsed, absl::Milliseconds(300));
  EXPECT_LT(elapsed, absl::Seconds(3));
}

TEST(HostPortTest, ParsesHostsPortsAndIpv6) {
  auto plain = ParseHostPort("leader.default.svc:29500");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->host, "leader.default.svc");
  EXPECT_EQ(plain->port, 29500);
  auto v6 = ParseHostPort("[::1]:80");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->ToString(), "[::1]:80");
  EXPECT_FALSE(ParseHostPort("no-port").ok());
  EXPECT_FALSE(ParseHostPort("host:99999").ok());
  EXPECT_FALSE(ParseHostPort("host:http").ok());
}

}  // namespace
}  // namespace strata::parallel

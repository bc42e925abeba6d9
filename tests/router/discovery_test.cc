// --backends parsing, the hosts-file resolver and DnsDiscovery keeping a
// backend set in step with a changing answer.
#include "router/discovery.h"

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/backend_pool.h"
#include "tests/integration/child_process.h"
#include "tests/router/router_harness.h"

namespace strata::router {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(DiscoveryTest, ParsesAStaticListWithoutDuplicates) {
  const auto spec = ParseBackends("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:1,[::1]:3");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->is_dns());
  EXPECT_THAT(spec->static_addresses, ElementsAre("127.0.0.1:1", "127.0.0.1:2", "[::1]:3"));
}

TEST(DiscoveryTest, ParsesADnsName) {
  const auto spec = ParseBackends("dns:///strata-leaders.default.svc:50051");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->is_dns());
  EXPECT_EQ(spec->dns_name, "strata-leaders.default.svc");
  EXPECT_EQ(spec->dns_port, 50051);
}

TEST(DiscoveryTest, RejectsMalformedBackendsNamingTheEntry) {
  for (const char* bad : {"", "localhost", "host:0", "host:99999", "a:1,b", "::1:5"}) {
    const auto spec = ParseBackends(bad);
    ASSERT_FALSE(spec.ok()) << bad;
    EXPECT_THAT(std::string(spec.status().message()), HasSubstr("--backends")) << bad;
  }
  EXPECT_THAT(std::string(ParseBackends("dns://8.8.8.8/name:1").status().message()),
              HasSubstr("authority is not supported"));
  EXPECT_THAT(std::string(ParseBackends("dns:///name").status().message()),
              HasSubstr("dns:///NAME:PORT"));
}

TEST(DiscoveryTest, JoinsIpv6AddressesWithBrackets) {
  EXPECT_EQ(JoinHostPort("10.0.0.1", 5), "10.0.0.1:5");
  EXPECT_EQ(JoinHostPort("::1", 5), "[::1]:5");
}

TEST(DiscoveryTest, HostsFileResolverReadsEveryAddressOfTheName) {
  strata::testing::TempDir dir;
  std::ofstream(dir.File("hosts")) << "# comment\n10.0.0.1 other\n10.0.0.2 replicas alias\n"
                                      "10.0.0.3\treplicas # trailing\n10.0.0.2 replicas\n";
  const Resolver resolve = HostsFileResolver(dir.File("hosts"));
  EXPECT_THAT(*resolve("replicas"), ElementsAre("10.0.0.2", "10.0.0.3"));
  EXPECT_THAT(*resolve("alias"), ElementsAre("10.0.0.2"));
  EXPECT_TRUE(resolve("missing")->empty());
  EXPECT_FALSE(HostsFileResolver(dir.File("absent"))("replicas").ok());
}

TEST(DiscoveryTest, SystemResolverResolvesLocalhost) {
  const auto addresses = SystemResolver()("localhost");
  ASSERT_TRUE(addresses.ok()) << addresses.status();
  EXPECT_FALSE(addresses->empty());
}

TEST(DiscoveryTest, DnsDiscoveryFollowsTheAnswerAndKeepsTheLastSetOnErrors) {
  strata::testing::TempDir dir;
  const std::string hosts = dir.File("hosts");
  const auto answer = [&](const std::string& text) {
    std::ofstream(hosts + ".tmp") << text;
    std::rename((hosts + ".tmp").c_str(), hosts.c_str());
  };
  answer("127.0.0.2 replicas\n");
  BackendPool::Options options;
  options.watch_load = false;
  BackendPool pool(nullptr, options);
  BackendsSpec spec = *ParseBackends("dns:///replicas:7000");
  DnsDiscovery discovery(spec, HostsFileResolver(hosts), std::chrono::milliseconds(20), pool);
  ASSERT_TRUE(discovery.Start().ok());
  EXPECT_THAT(pool.Addresses(), ElementsAre("127.0.0.2:7000"));
  const auto first = pool.Backends().at(0);

  answer("127.0.0.2 replicas\n127.0.0.3 replicas\n");
  EXPECT_TRUE(testing::Eventually([&] { return pool.Addresses().size() == 2; }));
  EXPECT_THAT(pool.Addresses(), ElementsAre("127.0.0.2:7000", "127.0.0.3:7000"));
  EXPECT_EQ(pool.Backends().at(0), first);  // kept, not rebuilt

  std::remove(hosts.c_str());  // resolution fails: the set stays
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(pool.Addresses().size(), 2u);

  answer("127.0.0.3 replicas\n");
  EXPECT_TRUE(testing::Eventually([&] { return pool.Addresses().size() == 1; }));
  EXPECT_THAT(pool.Addresses(), ElementsAre("127.0.0.3:7000"));
  discovery.Stop();
  pool.StopWatching();
}

}  // namespace
}  // namespace strata::router

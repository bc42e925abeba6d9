// `strata health`: the grpc.health.v1 check of a Kubernetes gRPC probe, from a
// shell, against real workers: exit 0 and "SERVING" only when the server (or
// the named service) is SERVING; NOT_SERVING, an unknown service and an
// unreachable server each exit 1 and say why.
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/child_process.h"
#include "tests/integration/test_servers.h"

namespace strata::testing {
namespace {

using ::testing::HasSubstr;

CommandResult Health(const std::vector<std::string>& arguments) {
  std::vector<std::string> argv = {CliBinary(), "health"};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  return RunCommand(argv, std::nullopt, std::chrono::seconds(90));
}

TEST(HealthCommandTest, WaitsUntilALoadingWorkerServesAndChecksNamedServices) {
  TempDir temp;
  absl::StatusOr<ServerProcess> worker = LaunchWorker(STRATA_MODEL_DIR, {}, temp.path());
  ASSERT_TRUE(worker.ok()) << worker.status();

  // The worker may still be loading: --wait covers that.
  const CommandResult waited = Health({"--server", worker->address, "--wait", "60"});
  EXPECT_EQ(waited.exit_code, 0) << waited.stderr_text;
  EXPECT_EQ(waited.stdout_text, "SERVING\n");

  const CommandResult inference =
      Health({"--server", worker->address, "--service", "strata.v1.Inference"});
  EXPECT_EQ(inference.exit_code, 0) << inference.stderr_text;
  EXPECT_EQ(inference.stdout_text, "SERVING\n");

  const CommandResult unknown =
      Health({"--server", worker->address, "--service", "no.such.Service"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(unknown.stdout_text, "UNKNOWN\n");
  EXPECT_THAT(unknown.stderr_text, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(unknown.stderr_text, HasSubstr("no.such.Service"));
}

TEST(HealthCommandTest, ARankWaitingForItsLeaderIsNotServingEvenAfterTheWait) {
  TempDir temp;
  // Rank 1 of a replica whose leader never comes: it listens, but health stays
  // NOT_SERVING while it waits to join.
  absl::StatusOr<ServerProcess> follower =
      LaunchWorker(STRATA_MODEL_DIR,
                   {"--tp", "2", "--rank", "1", "--leader-address",
                    absl::StrCat("127.0.0.1:", FreePort()), "--bootstrap-timeout", "60"},
                   temp.path());
  ASSERT_TRUE(follower.ok()) << follower.status();

  const auto start = std::chrono::steady_clock::now();
  const CommandResult result = Health({"--server", follower->address, "--wait", "1"});
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.stdout_text, "NOT_SERVING\n");
  EXPECT_GE(elapsed, std::chrono::milliseconds(800)) << "it did not wait";
  EXPECT_LT(elapsed, std::chrono::seconds(20));
}

TEST(HealthCommandTest, AnUnreachableServerFailsNamingItsAddress) {
  const std::string address = absl::StrCat("127.0.0.1:", FreePort());
  const CommandResult result = Health({"--server", address, "--timeout", "1"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.stdout_text, "UNKNOWN\n");
  EXPECT_THAT(result.stderr_text, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(result.stderr_text, HasSubstr(address));
}

}  // namespace
}  // namespace strata::testing

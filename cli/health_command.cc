// strata health: the grpc.health.v1 Check a Kubernetes gRPC probe makes, from
// a shell: is the server (or one of its services) SERVING?
//
//   strata health --server HOST:PORT [--service NAME] [--wait SECONDS] [--timeout SECONDS]
//
// Prints the last status seen (SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN)
// on stdout. Exit 0 when SERVING; 1 otherwise, with the reason on stderr when
// the check itself failed (server unreachable, service not registered:
// NOT_FOUND). With --wait, checks again every 200 ms until SERVING or until
// the wait is over, so a script can wait for a server that is still starting.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/inference_client.h"

namespace strata::cli {
namespace {

using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

constexpr auto kRetryInterval = std::chrono::milliseconds(200);

struct HealthFlags {
  std::string server;
  std::string service;
  double wait_seconds = 0;
  double timeout_seconds = 2;
};

std::chrono::milliseconds Milliseconds(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

int RunHealth(const HealthFlags& flags) {
  InferenceClient client(flags.server, Milliseconds(flags.timeout_seconds));
  const auto deadline = std::chrono::steady_clock::now() + Milliseconds(flags.wait_seconds);
  while (true) {
    const absl::StatusOr<ServingStatus> status = client.CheckHealth(flags.service);
    const bool serving = status.ok() && *status == grpc::health::v1::HealthCheckResponse::SERVING;
    if (serving || std::chrono::steady_clock::now() + kRetryInterval > deadline) {
      if (!status.ok()) {
        std::printf("UNKNOWN\n");
        const std::string what =
            flags.service.empty() ? std::string("server") : absl::StrCat("service ", flags.service);
        return PrintError(absl::Status(status.status().code(),
                                       absl::StrCat(what, " at ", flags.server, ": ",
                                                    std::string(status.status().message()))));
      }
      std::printf("%s\n",
                  grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status).c_str());
      return serving ? 0 : 1;
    }
    std::this_thread::sleep_for(kRetryInterval);
  }
}

}  // namespace

void AddHealthCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<HealthFlags>();
  CLI::App* command = app.add_subcommand(
      "health", "grpc.health.v1 Check (what a Kubernetes gRPC probe asks); exit 0 when SERVING");
  command->add_option("--server", flags->server, "Server address HOST:PORT")->required();
  command->add_option("--service", flags->service,
                      "Service to check, e.g. strata.v1.Inference (default: the whole server)");
  command
      ->add_option("--wait", flags->wait_seconds,
                   "Keep checking until SERVING for up to this many seconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command->add_option("--timeout", flags->timeout_seconds, "Deadline of each check, in seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->callback([flags, exit_code] { *exit_code = RunHealth(*flags); });
}

}  // namespace strata::cli

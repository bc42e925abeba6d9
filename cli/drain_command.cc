// strata drain: takes one replica out of service gracefully; strata backends:
// what a router knows of its backends.
//
//   strata drain --router-admin HOST:PORT --backend HOST:PORT [--reason TEXT]
//   strata drain --worker HOST:PORT [--reason TEXT]
//   strata backends --router-admin HOST:PORT [--json]
//
// Through a router (its --admin-listen address), the router stops sending the
// backend new calls at once and asks the backend's leader to drain; directly
// to a leader (--worker), only the leader is told (routers follow its health
// within milliseconds). Either way the leader turns NOT_SERVING, finishes its
// calls in flight (up to its --drain-timeout) and exits 0. The command
// returns as soon as the drain has started: it prints one line (or one JSON
// object with --json) and exits 0; on failure it prints "strata: CODE:
// message" on stderr and exits 1.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "grpcpp/grpcpp.h"
#include "strata/v1/replica.grpc.pb.h"
#include "strata/v1/router_admin.grpc.pb.h"

namespace strata::cli {
namespace {

struct DrainFlags {
  std::string router_admin;
  std::string backend;
  std::string worker;
  std::string reason;
  double timeout_seconds = 15;
  bool json = false;
};

struct BackendsFlags {
  std::string router_admin;
  double timeout_seconds = 5;
  bool json = false;
};

std::unique_ptr<grpc::ClientContext> ContextWithTimeout(double seconds) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return context;
}

// The gRPC error as a status whose message says which server answered.
absl::Status ErrorFrom(const std::string& what, const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

// "strata drain (user U on HOST)", for the leader's log.
std::string RequestedBy() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  const char* user = std::getenv("USER");
  return absl::StrCat("strata drain (user ", user != nullptr ? user : "?", " on ",
                      host[0] != '\0' ? host : "?", ")");
}

int DrainThroughRouter(const DrainFlags& flags) {
  auto stub = v1::RouterAdmin::NewStub(
      grpc::CreateChannel(flags.router_admin, grpc::InsecureChannelCredentials()));
  v1::DrainBackendRequest request;
  request.set_address(flags.backend);
  request.set_reason(flags.reason);
  v1::DrainBackendResponse response;
  auto context = ContextWithTimeout(flags.timeout_seconds);
  if (grpc::Status status = stub->DrainBackend(context.get(), request, &response); !status.ok()) {
    return PrintError(ErrorFrom(absl::StrCat("router admin ", flags.router_admin), status));
  }
  if (flags.json) {
    std::printf("%s\n", JsonLine({{"backend", flags.backend},
                                  {"generate_calls_in_flight", response.generate_calls_in_flight()},
                                  {"router_calls_in_flight", response.router_calls_in_flight()},
                                  {"already_draining", response.already_draining()},
                                  {"drain_timeout_seconds", response.drain_timeout_seconds()}})
                            .c_str());
    return 0;
  }
  std::printf("%s %s: %d calls in flight (%d from this router), up to %g s to finish\n",
              response.already_draining() ? "already draining" : "draining", flags.backend.c_str(),
              response.generate_calls_in_flight(), response.router_calls_in_flight(),
              response.drain_timeout_seconds());
  return 0;
}

int DrainWorker(const DrainFlags& flags) {
  auto stub =
      v1::Replica::NewStub(grpc::CreateChannel(flags.worker, grpc::InsecureChannelCredentials()));
  v1::DrainRequest request;
  request.set_reason(flags.reason);
  request.set_requested_by(RequestedBy());
  v1::DrainResponse response;
  auto context = ContextWithTimeout(flags.timeout_seconds);
  if (grpc::Status status = stub->Drain(context.get(), request, &response); !status.ok()) {
    return PrintError(ErrorFrom(absl::StrCat("worker ", flags.worker), status));
  }
  if (flags.json) {
    std::printf("%s\n", JsonLine({{"worker", flags.worker},
                                  {"generate_calls_in_flight", response.generate_calls_in_flight()},
                                  {"already_draining", response.already_draining()},
                                  {"drain_timeout_seconds", response.drain_timeout_seconds()}})
                            .c_str());
    return 0;
  }
  std::printf("%s %s: %d calls in flight, up to %g s to finish\n",
              response.already_draining() ? "already draining" : "draining", flags.worker.c_str(),
              response.generate_calls_in_flight(), response.drain_timeout_seconds());
  return 0;
}

int RunDrain(const DrainFlags& flags) {
  if (flags.router_admin.empty() == flags.worker.empty()) {
    return PrintError(absl::InvalidArgumentError(
        "give --router-admin HOST:PORT with --backend HOST:PORT, or --worker HOST:PORT"));
  }
  if (!flags.router_admin.empty()) {
    if (flags.backend.empty()) {
      return PrintError(absl::InvalidArgumentError(
          "--router-admin needs --backend HOST:PORT (see `strata backends --router-admin`)"));
    }
    return DrainThroughRouter(flags);
  }
  return DrainWorker(flags);
}

int RunBackends(const BackendsFlags& flags) {
  auto stub = v1::RouterAdmin::NewStub(
      grpc::CreateChannel(flags.router_admin, grpc::InsecureChannelCredentials()));
  v1::ListBackendsResponse response;
  auto context = ContextWithTimeout(flags.timeout_seconds);
  if (grpc::Status status = stub->ListBackends(context.get(), {}, &response); !status.ok()) {
    return PrintError(ErrorFrom(absl::StrCat("router admin ", flags.router_admin), status));
  }
  if (flags.json) {
    nlohmann::json backends = nlohmann::json::array();
    for (const v1::BackendState& backend : response.backends()) {
      backends.push_back({{"address", backend.address()},
                          {"serving", backend.serving()},
                          {"draining", backend.draining()},
                          {"ejected", backend.ejected()},
                          {"available", backend.available()},
                          {"in_flight", backend.in_flight()},
                          {"load_reported", backend.load_reported()},
                          {"waiting", backend.waiting()},
                          {"running", backend.running()},
                          {"kv_usage", backend.kv_usage()}});
    }
    std::printf("%s\n", JsonLine({{"backends", backends}}).c_str());
    return 0;
  }
  std::printf("%-24s %-12s %-9s %-8s %9s %8s %8s %9s\n", "BACKEND", "HEALTH", "DRAINING", "EJECTED",
              "IN_FLIGHT", "WAITING", "RUNNING", "KV_USAGE");
  for (const v1::BackendState& backend : response.backends()) {
    std::printf("%-24s %-12s %-9s %-8s %9d %8d %8d %8.1f%%\n", backend.address().c_str(),
                backend.serving() ? "SERVING" : "NOT_SERVING", backend.draining() ? "yes" : "no",
                backend.ejected() ? "yes" : "no", backend.in_flight(), backend.waiting(),
                backend.running(), 100.0 * backend.kv_usage());
  }
  return 0;
}

}  // namespace

void AddDrainCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<DrainFlags>();
  CLI::App* command = app.add_subcommand(
      "drain", "Drain a replica: no new calls, calls in flight finish, then its leader exits 0");
  command->add_option("--router-admin", flags->router_admin,
                      "A router's admin address HOST:PORT (its --admin-listen)");
  command->add_option(
      "--backend", flags->backend,
      "With --router-admin: the backend to drain, HOST:PORT as the router names it");
  command->add_option("--worker", flags->worker,
                      "Drain this replica leader directly, HOST:PORT (no router involved)");
  command->add_option("--reason", flags->reason, "Why (the leader and the router log it)");
  command->add_option("--timeout", flags->timeout_seconds, "Deadline of the request, in seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_flag("--json", flags->json, "Print one JSON object");
  command->callback([flags, exit_code] { *exit_code = RunDrain(*flags); });
}

void AddBackendsCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<BackendsFlags>();
  CLI::App* command = app.add_subcommand(
      "backends", "A router's backends: health, draining, ejection, calls in flight, load");
  command
      ->add_option("--router-admin", flags->router_admin,
                   "The router's admin address HOST:PORT (its --admin-listen)")
      ->required();
  command->add_option("--timeout", flags->timeout_seconds, "Deadline of the request, in seconds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_flag("--json", flags->json, "Print one JSON object");
  command->callback([flags, exit_code] { *exit_code = RunBackends(*flags); });
}

}  // namespace strata::cli

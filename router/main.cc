// strata-router: serves strata.v1.Inference in front of one worker and relays
// every call to it. Health is SERVING while the worker's is.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/server_process.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "nlohmann/json.hpp"
#include "prometheus/exposer.h"
#include "router/backend.h"
#include "router/health_watcher.h"
#include "router/inference_proxy.h"
#include "router/router_metrics.h"
#include "spdlog/spdlog.h"

namespace {

constexpr char kProgram[] = "strata-router";

// Leaves the process once gRPC is shut down. The metrics exposer's web server
// takes up to 2 s to stop (civetweb polls with a 2 s quantum) and holds
// nothing that needs an orderly close, so it is not waited for.
[[noreturn]] void ExitNow(int code) {
  spdlog::shutdown();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
  return 1;
}

bool WriteReadyFile(const std::string& path, const nlohmann::json& contents) {
  return strata::WriteFileAtomically(path, contents.dump() + "\n");
}

}  // namespace

int main(int argc, char** argv) {
  // Termination signals are taken by sigwait below; block them before any
  // thread starts so every thread inherits the mask.
  sigset_t termination_signals;
  sigemptyset(&termination_signals);
  sigaddset(&termination_signals, SIGINT);
  sigaddset(&termination_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &termination_signals, nullptr);

  CLI::App app{"strata-router: serves strata.v1.Inference and relays calls to a worker."};
  std::string backend_address;
  std::string listen_address = "127.0.0.1:50050";
  std::string metrics_address = "127.0.0.1:9401";
  std::string log_format = "text";
  std::string log_level = "info";
  std::string ready_file;
  int drain_seconds = 5;
  app.add_option("--backend", backend_address, "Worker address HOST:PORT")->required();
  app.add_option("--listen", listen_address, "gRPC address HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--metrics-listen", metrics_address,
                 "Prometheus /metrics address HOST:PORT (port 0: any free port; empty: off)")
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--ready-file", ready_file,
                 "Write {\"listen\", \"metrics\", \"pid\"} as JSON here once SERVING");
  app.add_option("--drain-seconds", drain_seconds,
                 "On SIGINT/SIGTERM, let calls in flight finish for this long")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (absl::Status status = strata::InitLogging(log_format, log_level); !status.ok()) {
    return Fail(std::string(status.message()));
  }

  strata::router::RouterMetrics metrics;
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string bound_metrics_address = "off";
  if (!metrics_address.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_address);
    } catch (const std::exception& error) {
      return Fail(absl::StrCat("--metrics-listen ", metrics_address, ": ", error.what()));
    }
    exposer->RegisterCollectable(metrics.registry());
    bound_metrics_address =
        strata::BoundAddress(metrics_address, exposer->GetListeningPorts().at(0));
  }

  strata::router::Backend backend(backend_address, &metrics);
  strata::router::InferenceProxy proxy(backend, &metrics);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&proxy);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    ExitNow(Fail(absl::StrCat("--listen ", listen_address, ": cannot listen there")));
  }
  const std::string bound_address = strata::BoundAddress(listen_address, port);
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  // "" is the server as a whole; probes may ask for either name.
  const auto set_serving = [health](bool serving) {
    health->SetServingStatus("", serving);
    health->SetServingStatus(std::string(strata::v1::Inference::service_full_name()), serving);
  };
  set_serving(false);
  std::printf("%s: serving on %s metrics %s backend %s\n", kProgram, bound_address.c_str(),
              bound_metrics_address.c_str(), backend_address.c_str());
  std::fflush(stdout);

  bool ready_written = false;
  strata::router::HealthWatcher watcher(backend, [&](bool serving) {
    set_serving(serving);
    if (serving && !ready_written && !ready_file.empty()) {
      ready_written = true;
      if (!WriteReadyFile(ready_file, {{"listen", bound_address},
                                       {"metrics", bound_metrics_address},
                                       {"pid", static_cast<int>(getpid())}})) {
        spdlog::error("cannot write --ready-file {}", ready_file);
      }
    }
  });
  watcher.Start();

  int signal_number = 0;
  sigwait(&termination_signals, &signal_number);
  spdlog::info("{}: shutting down on signal {}", kProgram, signal_number);
  health->Shutdown();  // every service NOT_SERVING from here on
  watcher.Stop();
  // Relays in flight get --drain-seconds to finish; then whatever is left
  // (long-lived health watches included) is cancelled.
  const auto drain_deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(drain_seconds);
  while (proxy.GenerateCallsInFlight() > 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  server->Shutdown(std::chrono::system_clock::now());
  ExitNow(0);
}

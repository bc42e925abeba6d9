// strata-router: serves strata.v1.Inference in front of a set of replica
// leaders (static list or DNS), balancing Generate calls over them with
// health checks, passive ejection, retries before the first response,
// admission control and graceful drain. See docs/router.md.
//
// Health: SERVING while at least one backend is healthy; NOT_SERVING from the
// moment SIGINT/SIGTERM arrives. Then new calls are refused UNAVAILABLE (so
// clients and load balancers go to another router), calls in flight get
// --drain-timeout seconds to finish, and the process exits 0.
//
// --admin-listen (off by default) serves strata.v1.RouterAdmin on a separate
// address: DrainBackend takes one backend out of rotation and asks its leader
// to drain; ListBackends shows every backend's state. It is never served on
// --listen, so clients cannot drain replicas.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/server_process.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "nlohmann/json.hpp"
#include "prometheus/exposer.h"
#include "router/admin_service.h"
#include "router/admission_controller.h"
#include "router/backend_pool.h"
#include "router/balancer.h"
#include "router/discovery.h"
#include "router/inference_proxy.h"
#include "router/request_router.h"
#include "router/router_metrics.h"
#include "spdlog/spdlog.h"

namespace {

constexpr char kProgram[] = "strata-router";

[[noreturn]] void ExitNow(int code) { strata::ExitServerProcess(code); }

int Fail(const std::string& message) { return strata::PrintStartupError(kProgram, message); }

}  // namespace

int main(int argc, char** argv) {
  strata::TuneProcessForServing();
  // Termination signals are taken by sigwait below; block them before any
  // thread starts so every thread inherits the mask.
  sigset_t termination_signals;
  sigemptyset(&termination_signals);
  sigaddset(&termination_signals, SIGINT);
  sigaddset(&termination_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &termination_signals, nullptr);

  CLI::App app{"strata-router: serves strata.v1.Inference and balances calls over replicas."};
  std::string backends_flag;
  std::string backend_address;
  std::string listen_address = "127.0.0.1:50050";
  std::string metrics_address = "127.0.0.1:9401";
  std::string admin_address;
  std::string policy = "least_load";
  std::string log_format = "text";
  std::string log_level = "info";
  std::string ready_file;
  std::string dns_hosts_file;
  int dns_refresh_ms = 5000;
  int max_inflight = 0;
  int max_queue = -1;
  double drain_timeout = 30.0;
  strata::router::RoutingOptions routing;
  strata::router::BalancerOptions balancing;
  strata::router::BackendPool::Options pool_options;
  int overload_retry_ms = static_cast<int>(routing.overload_retry_hint.count());
  auto* backends_option =
      app.add_option("--backends", backends_flag,
                     "Backends: HOST:PORT,HOST:PORT (static) or dns:///NAME:PORT (re-resolved)");
  auto* backend_option =
      app.add_option("--backend", backend_address, "One static backend HOST:PORT (old form)");
  backends_option->excludes(backend_option);
  app.add_option("--listen", listen_address, "gRPC address HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--metrics-listen", metrics_address,
                 "Prometheus /metrics address HOST:PORT (port 0: any free port; empty: off)")
      ->capture_default_str();
  app.add_option("--admin-listen", admin_address,
                 "Serve strata.v1.RouterAdmin (drain a backend, list backends) on this HOST:PORT "
                 "(port 0: any free port; default: off). Keep it off networks clients reach");
  app.add_option("--policy", policy, "round_robin, least_load or prefix_affinity")
      ->check(CLI::IsMember({"round_robin", "least_load", "prefix_affinity"}))
      ->capture_default_str();
  app.add_option("--max-inflight", max_inflight, "Most Generate calls routed at once (0: no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-queue", max_queue,
                 "Most Generate calls waiting for a slot beyond --max-inflight (default: as many "
                 "as --max-inflight); more are refused RESOURCE_EXHAUSTED");
  app.add_option("--overload-retry-ms", overload_retry_ms,
                 "Retry hint given with RESOURCE_EXHAUSTED")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--client-rate", routing.client_rate,
                 "Per-client limit: Generate calls/s per value of --client-key (0: off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--client-burst", routing.client_burst, "Per-client limit: burst size")
      ->check(CLI::Range(1.0, 1e9))
      ->capture_default_str();
  app.add_option("--client-key", routing.client_key,
                 "Metadata key naming the client for --client-rate")
      ->capture_default_str();
  app.add_option("--max-attempts", routing.max_attempts,
                 "Attempts per Generate call (backends tried before the first response)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--affinity-margin", balancing.affinity_margin,
                 "prefix_affinity/session: extra load (requests) the preferred backend may carry")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--eject-after", pool_options.ejection.eject_after,
                 "Consecutive failed calls that eject a backend")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dns-refresh-ms", dns_refresh_ms, "Re-resolve dns:/// backends this often")
      ->check(CLI::Range(50, 3600 * 1000))
      ->capture_default_str();
  app.add_option("--dns-hosts-file", dns_hosts_file,
                 "Resolve dns:/// names from this hosts-style file instead of the system "
                 "resolver (tests, local setups)");
  app.add_option("--drain-timeout,--drain-seconds", drain_timeout,
                 "On SIGINT/SIGTERM, let calls in flight finish for this many seconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text or json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--ready-file", ready_file,
                 "Write {\"listen\", \"metrics\", \"admin\", \"pid\"} as JSON here once "
                 "SERVING");
  CLI11_PARSE(app, argc, argv);
  routing.overload_retry_hint = std::chrono::milliseconds(overload_retry_ms);
  routing.affinity_margin = balancing.affinity_margin;
  if (max_queue < 0) max_queue = max_inflight;

  if (absl::Status status = strata::InitLogging(log_format, log_level); !status.ok()) {
    return Fail(std::string(status.message()));
  }
  if (backends_flag.empty() && backend_address.empty()) {
    return Fail("--backends is required (HOST:PORT,... or dns:///NAME:PORT)");
  }
  absl::StatusOr<strata::router::BackendsSpec> spec =
      strata::router::ParseBackends(backends_flag.empty() ? backend_address : backends_flag);
  if (!spec.ok()) return Fail(std::string(spec.status().message()));
  absl::StatusOr<std::unique_ptr<strata::router::Balancer>> balancer =
      strata::router::CreateBalancer(policy, balancing);
  if (!balancer.ok()) return Fail(std::string(balancer.status().message()));

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

  // Health of the router as a whole follows "some backend is healthy"; set
  // once the server exists (the pool's watchers report from their threads).
  std::atomic<grpc::HealthCheckServiceInterface*> health{nullptr};
  std::atomic<bool> ready_written{false};
  std::string bound_address;
  std::string bound_admin_address = "off";
  std::unique_ptr<strata::router::BackendPool> pool;
  const auto on_health_change = [&](const strata::router::Backend&, bool) {
    grpc::HealthCheckServiceInterface* service = health.load();
    if (service == nullptr || pool == nullptr) return;
    bool any_healthy = false;
    for (const auto& backend : pool->Backends()) {
      any_healthy = any_healthy || (backend->healthy() && !backend->draining());
    }
    service->SetServingStatus("", any_healthy);
    service->SetServingStatus(std::string(strata::v1::Inference::service_full_name()), any_healthy);
    if (any_healthy && !ready_file.empty() && !ready_written.exchange(true)) {
      const nlohmann::json contents = {{"listen", bound_address},
                                       {"metrics", bound_metrics_address},
                                       {"admin", bound_admin_address},
                                       {"pid", static_cast<int>(getpid())}};
      if (!strata::WriteFileAtomically(ready_file, contents.dump() + "\n")) {
        spdlog::error("cannot write --ready-file {}", ready_file);
      }
    }
  };
  pool = std::make_unique<strata::router::BackendPool>(&metrics, pool_options, on_health_change);
  strata::router::AdmissionController admission(max_inflight, max_queue);
  strata::router::RequestRouter request_router(*pool, **balancer, admission, &metrics, routing);
  strata::router::InferenceProxy proxy(request_router);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(-1);
  // Let a large prompt (220 KB) arrive without waiting for window updates.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1 << 20);
  int port = 0;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&proxy);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    ExitNow(Fail(absl::StrCat("--listen ", listen_address, ": cannot listen there")));
  }
  bound_address = strata::BoundAddress(listen_address, port);
  grpc::HealthCheckServiceInterface* health_service = server->GetHealthCheckService();
  health_service->SetServingStatus("", false);
  health_service->SetServingStatus(std::string(strata::v1::Inference::service_full_name()), false);

  // The admin API on its own server, so that it is never reachable through --listen.
  std::unique_ptr<strata::router::RouterAdminService> admin;
  std::unique_ptr<grpc::Server> admin_server;
  if (!admin_address.empty()) {
    strata::router::RouterAdminService::Options admin_options;
    admin_options.requested_by = absl::StrCat("router ", bound_address);
    admin = std::make_unique<strata::router::RouterAdminService>(*pool, admin_options);
    grpc::ServerBuilder admin_builder;
    int admin_port = 0;
    admin_builder.AddListeningPort(admin_address, grpc::InsecureServerCredentials(), &admin_port);
    admin_builder.RegisterService(admin.get());
    admin_server = admin_builder.BuildAndStart();
    if (admin_server == nullptr || admin_port == 0) {
      ExitNow(Fail(absl::StrCat("--admin-listen ", admin_address, ": cannot listen there")));
    }
    bound_admin_address = strata::BoundAddress(admin_address, admin_port);
  }
  health.store(health_service);

  std::unique_ptr<strata::router::DnsDiscovery> discovery;
  std::string backends_text;
  if (spec->is_dns()) {
    backends_text = absl::StrCat("dns:///", spec->dns_name, ":", spec->dns_port);
    discovery = std::make_unique<strata::router::DnsDiscovery>(
        *spec,
        dns_hosts_file.empty() ? strata::router::SystemResolver()
                               : strata::router::HostsFileResolver(dns_hosts_file),
        std::chrono::milliseconds(dns_refresh_ms), *pool);
    if (absl::Status status = discovery->Start(); !status.ok()) {
      spdlog::warn("{}: {}; retrying every {} ms", kProgram, std::string(status.message()),
                   dns_refresh_ms);
    }
  } else {
    backends_text = absl::StrJoin(spec->static_addresses, ",");
    pool->Update(spec->static_addresses);
  }
  std::printf("%s: serving on %s metrics %s backend %s policy %s admin %s\n", kProgram,
              bound_address.c_str(), bound_metrics_address.c_str(), backends_text.c_str(),
              std::string((*balancer)->name()).c_str(), bound_admin_address.c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&termination_signals, &signal_number);
  spdlog::info("{}: draining on signal {}: {} calls in flight", kProgram, signal_number,
               proxy.GenerateCallsInFlight());
  health_service->Shutdown();  // every service NOT_SERVING from here on
  admission.StartDraining();   // new calls: UNAVAILABLE, so clients go elsewhere
  if (discovery) discovery->Stop();
  // Calls in flight get --drain-timeout to finish; then whatever is left
  // (long-lived health watches included) is cancelled.
  const auto drain_deadline =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(drain_timeout * 1000.0));
  while (proxy.GenerateCallsInFlight() > 0 && std::chrono::steady_clock::now() < drain_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int32_t left = proxy.GenerateCallsInFlight();
  if (left > 0) spdlog::warn("{}: drain timeout: cancelling {} calls", kProgram, left);
  server->Shutdown(std::chrono::system_clock::now());
  if (admin_server != nullptr) admin_server->Shutdown(std::chrono::system_clock::now());
  pool->StopWatching();
  ExitNow(0);
}

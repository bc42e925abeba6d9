#include "tests/integration/test_servers.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace strata::testing {
namespace {

// "<program>: <verb> on HOST:PORT metrics HOST:PORT..." -> the two addresses.
absl::Status ParseAddresses(const std::string& line, ServerProcess& server) {
  static const std::regex kPattern(R"( on (\S+) metrics ([^\s,]+))");
  std::smatch match;
  if (!std::regex_search(line, match, kPattern)) {
    return absl::InternalError(absl::StrCat("no addresses in '", line, "'"));
  }
  server.address = match[1];
  server.metrics_address = match[2];
  return absl::OkStatus();
}

}  // namespace

std::string WorkerBinary() { return STRATA_BINARY_DIR "/worker/service/strata-worker"; }
std::string RouterBinary() { return STRATA_BINARY_DIR "/router/strata-router"; }
std::string CliBinary() { return STRATA_BINARY_DIR "/cli/strata"; }

absl::StatusOr<ServerProcess> LaunchWorker(const std::string& model_dir,
                                           const std::vector<std::string>& extra_flags,
                                           const std::string& log_dir, const std::string& name) {
  std::vector<std::string> argv = {WorkerBinary(), "--model",     model_dir,
                                   "--listen",     "127.0.0.1:0", "--metrics-listen",
                                   "127.0.0.1:0",  "--log-level", "warn"};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  ServerProcess server;
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      ChildProcess::Start({argv, log_dir, name, std::nullopt});
  if (!process.ok()) return process.status();
  server.process = *std::move(process);
  absl::StatusOr<std::string> line =
      server.process->WaitForStdoutLine("strata-worker: listening on", std::chrono::seconds(30));
  if (!line.ok()) return line.status();
  if (absl::Status status = ParseAddresses(*line, server); !status.ok()) return status;
  return server;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

absl::StatusOr<ReplicaProcesses> LaunchReplica(const std::string& model_dir, int tp, int pp,
                                               const std::vector<std::string>& extra_flags,
                                               const std::string& log_dir) {
  ReplicaProcesses replica;
  replica.leader_store = absl::StrCat("127.0.0.1:", FreePort());
  const int world = tp * pp;
  replica.ranks.resize(world);
  for (int rank = world - 1; rank >= 0; --rank) {
    std::vector<std::string> flags = {"--tp",
                                      absl::StrCat(tp),
                                      "--pp",
                                      absl::StrCat(pp),
                                      "--rank",
                                      absl::StrCat(rank),
                                      "--leader-address",
                                      replica.leader_store,
                                      "--threads",
                                      "1"};
    flags.insert(flags.end(), extra_flags.begin(), extra_flags.end());
    absl::StatusOr<ServerProcess> process =
        LaunchWorker(model_dir, flags, log_dir, absl::StrCat("rank", rank));
    if (!process.ok()) return process.status();
    replica.ranks[rank] = *std::move(process);
  }
  return replica;
}

absl::StatusOr<ServerProcess> LaunchRouter(const std::string& backend, const std::string& log_dir) {
  ServerProcess server;
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      ChildProcess::Start({{RouterBinary(), "--backend", backend, "--listen", "127.0.0.1:0",
                            "--metrics-listen", "127.0.0.1:0", "--log-level", "warn"},
                           log_dir,
                           "router",
                           std::nullopt});
  if (!process.ok()) return process.status();
  server.process = *std::move(process);
  absl::StatusOr<std::string> line =
      server.process->WaitForStdoutLine("strata-router: serving on", std::chrono::seconds(30));
  if (!line.ok()) return line.status();
  if (absl::Status status = ParseAddresses(*line, server); !status.ok()) return status;
  return server;
}

grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(const std::string& address,
                                                                 const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  if (!stub->Check(&context, request, &response).ok()) {
    return grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }
  return response.status();
}

absl::Status WaitUntilServing(const ServerProcess& server, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (CheckHealth(server.address, "strata.v1.Inference") ==
        grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    }
    if (!server.process->Running()) {
      return absl::FailedPreconditionError(absl::StrCat(
          server.process->name(), " exited before SERVING; stderr:\n", server.process->Stderr()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(server.process->name(), " at ", server.address,
                                                  " is not SERVING; stderr:\n",
                                                  server.process->Stderr()));
}

absl::StatusOr<std::vector<std::string>> ReflectedServices(const std::string& address) {
  using grpc::reflection::v1alpha::ServerReflection;
  using grpc::reflection::v1alpha::ServerReflectionRequest;
  using grpc::reflection::v1alpha::ServerReflectionResponse;
  auto stub =
      ServerReflection::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto stream = stub->ServerReflectionInfo(&context);
  ServerReflectionRequest request;
  request.set_list_services("");
  stream->Write(request);
  stream->WritesDone();
  ServerReflectionResponse response;
  std::vector<std::string> services;
  while (stream->Read(&response)) {
    for (const auto& service : response.list_services_response().service()) {
      services.push_back(service.name());
    }
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  return services;
}

absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  const std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* resolved = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &resolved) != 0 || resolved == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", address));
  }
  const int fd = socket(resolved->ai_family, resolved->ai_socktype, resolved->ai_protocol);
  const bool connected = fd >= 0 && connect(fd, resolved->ai_addr, resolved->ai_addrlen) == 0;
  freeaddrinfo(resolved);
  if (!connected) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
  }
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\nConnection: close\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot send to ", address));
  }
  std::string reply;
  char buffer[16384];
  ssize_t got;
  while ((got = read(fd, buffer, sizeof(buffer))) > 0) reply.append(buffer, got);
  close(fd);
  const size_t body = reply.find("\r\n\r\n");
  if (reply.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) {
    return absl::InternalError(absl::StrCat("bad HTTP reply from ", address));
  }
  if (reply.substr(9, 3) != "200") {
    return absl::InternalError(
        absl::StrCat("GET ", path, " from ", address, ": ", reply.substr(0, reply.find('\r'))));
  }
  return reply.substr(body + 4);
}

std::optional<double> MetricValue(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series, 0) != 0 || line.size() <= series.size()) continue;
    if (line[series.size()] != ' ') continue;
    double value;
    if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) return value;
  }
  return std::nullopt;
}

}  // namespace strata::testing

#include "tests/router/router_processes.h"

#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

namespace strata::router::testing {

using strata::testing::ChildProcess;
using strata::testing::ServerProcess;

namespace {

// "<program>: <verb> on HOST:PORT metrics HOST:PORT..." -> the two addresses.
absl::Status ParseAddresses(const std::string& line, ServerProcess& server) {
  const size_t on = line.find(" on ");
  const size_t metrics = line.find(" metrics ");
  if (on == std::string::npos || metrics == std::string::npos) {
    return absl::InternalError(absl::StrCat("no addresses in '", line, "'"));
  }
  server.address = line.substr(on + 4, metrics - on - 4);
  const size_t start = metrics + 9;
  size_t end = line.find_first_of(" ,", start);
  if (end == std::string::npos) end = line.size();
  server.metrics_address = line.substr(start, end - start);
  return absl::OkStatus();
}

absl::StatusOr<ServerProcess> Start(std::vector<std::string> argv, const std::string& name,
                                    const std::string& log_dir, const std::string& ready_line) {
  ServerProcess server;
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      ChildProcess::Start({std::move(argv), log_dir, name, std::nullopt});
  if (!process.ok()) return process.status();
  server.process = *std::move(process);
  absl::StatusOr<std::string> line =
      server.process->WaitForStdoutLine(ready_line, std::chrono::seconds(30));
  if (!line.ok()) return line.status();
  if (absl::Status status = ParseAddresses(*line, server); !status.ok()) return status;
  return server;
}

}  // namespace

absl::StatusOr<ServerProcess> StartWorker(const std::string& listen, const std::string& name,
                                          const std::string& log_dir,
                                          std::vector<std::string> extra) {
  std::vector<std::string> argv = {strata::testing::WorkerBinary(),
                                   "--model",
                                   STRATA_MODEL_DIR,
                                   "--listen",
                                   listen,
                                   "--metrics-listen",
                                   "127.0.0.1:0",
                                   "--threads",
                                   "1",
                                   "--log-level",
                                   "warn"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return Start(std::move(argv), name, log_dir, "strata-worker: listening on");
}

absl::StatusOr<ServerProcess> StartRouter(std::vector<std::string> flags,
                                          const std::string& log_dir, const std::string& name) {
  std::vector<std::string> argv = {strata::testing::RouterBinary(),
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--metrics-listen",
                                   "127.0.0.1:0",
                                   "--log-level",
                                   "warn"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return Start(std::move(argv), name, log_dir, "strata-router: serving on");
}

std::optional<double> ScrapeMetric(const ServerProcess& server, const std::string& series) {
  absl::StatusOr<std::string> text = strata::testing::HttpGet(server.metrics_address, "/metrics");
  if (!text.ok()) return std::nullopt;
  return strata::testing::MetricValue(*text, series);
}

std::vector<StreamResult> RunStreams(const std::string& address, int count, int threads,
                                     const std::function<v1::GenerateRequest(int)>& request_of,
                                     std::chrono::milliseconds deadline,
                                     const std::function<int(int)>& cancel_after,
                                     std::atomic<int>* started) {
  grpc::ChannelArguments arguments;
  // Several channels, so that streams do not all queue on one connection.
  std::vector<std::unique_ptr<v1::Inference::Stub>> stubs;
  for (int i = 0; i < 4; ++i) {
    arguments.SetInt("strata.test.channel", i);
    stubs.push_back(v1::Inference::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments)));
  }
  std::vector<StreamResult> results(count);
  std::atomic<int> next{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
        StreamResult& result = results[i];
        const auto start = std::chrono::steady_clock::now();
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + deadline);
        auto reader = stubs[t % stubs.size()]->Generate(&context, request_of(i));
        if (started != nullptr) started->fetch_add(1);
        const int cancel_at = cancel_after ? cancel_after(i) : -1;
        if (cancel_at == 0) context.TryCancel();
        v1::GenerateResponse response;
        while (reader->Read(&response)) {
          ++result.responses;
          if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) result.finished = true;
          if (cancel_at > 0 && result.responses == cancel_at) context.TryCancel();
        }
        result.status = reader->Finish();
        result.seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
    });
  }
  for (auto& worker : workers) worker.join();
  return results;
}

v1::GenerateRequest StoryRequest(int max_tokens) {
  v1::GenerateRequest request;
  request.set_text("Once upon a time, there was a little girl named Lily.");
  request.mutable_stopping()->set_max_tokens(max_tokens);
  request.mutable_stopping()->set_ignore_eos(true);
  request.mutable_sampling()->set_temperature(0.0f);
  return request;
}

}  // namespace strata::router::testing

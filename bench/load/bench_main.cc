// strata-bench: a load generator for strata.v1.Inference (a router or a
// worker). Sweeps fixed concurrency levels or Poisson arrival rates with
// prompts of random token ids, optionally sharing long prefixes, and reports
// throughput and TTFT / inter-token / end-to-end latency percentiles per run,
// on stdout and as JSON (--json).
//
//   strata-bench --server 127.0.0.1:50051 --concurrency 1,8,32
//                --prompt-tokens 128 --max-tokens 64 --json out.json
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include "CLI/CLI.hpp"
#include "bench/load/bench_cli.h"
#include "bench/load/grpc_target.h"

int main(int argc, char** argv) {
  CLI::App app{"strata-bench: load generator for strata.v1.Inference (router or worker)"};
  std::string server;
  double connect_timeout_s = 10.0;
  double request_timeout_s = 0.0;
  strata::bench::BenchFlags flags;
  app.add_option("--server", server, "Server address HOST:PORT")->required();
  app.add_option("--connect-timeout", connect_timeout_s, "Seconds to wait for the server")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--request-timeout", request_timeout_s,
                 "Deadline of each request in seconds (0: none)")
      ->check(CLI::NonNegativeNumber);
  strata::bench::AddBenchFlags(app, flags);
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<std::vector<strata::bench::RunSpec>> specs = strata::bench::MakeRunSpecs(flags);
  if (!specs.ok()) {
    std::fprintf(stderr, "strata-bench: %s\n", std::string(specs.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<strata::bench::GrpcTarget>> target =
      strata::bench::GrpcTarget::Connect(
          server, std::chrono::milliseconds(static_cast<int64_t>(connect_timeout_s * 1000)));
  if (!target.ok()) {
    std::fprintf(stderr, "strata-bench: %s\n", std::string(target.status().message()).c_str());
    return 1;
  }
  (*target)->set_temperature(flags.temperature);
  if (request_timeout_s > 0) {
    (*target)->set_request_timeout(
        std::chrono::milliseconds(static_cast<int64_t>(request_timeout_s * 1000)));
  }
  const strata::v1::ModelInfo& info = (*target)->model_info();
  absl::StatusOr<strata::bench::Workload> workload =
      strata::bench::Workload::Create(flags.workload, info.vocab_size());
  if (!workload.ok()) {
    std::fprintf(stderr, "strata-bench: %s\n", std::string(workload.status().message()).c_str());
    return 2;
  }
  std::printf("server %s: %s (%s, vocab %d, context %d)\n", server.c_str(),
              info.model_name().c_str(), info.architecture().c_str(), info.vocab_size(),
              info.max_context_length());
  const nlohmann::json extra = {{"server", server},
                                {"model", info.model_name()},
                                {"workload", strata::bench::WorkloadJson(flags)}};
  if (absl::Status status = strata::bench::RunSweep(**target, *workload, *specs, flags, extra);
      !status.ok()) {
    std::fprintf(stderr, "strata-bench: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

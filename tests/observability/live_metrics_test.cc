// A live router in front of a live worker (real processes on 127.0.0.1, port
// 0) under a small load: promtool accepts both /metrics outputs, the stage
// histograms add up to the end-to-end duration, request ids travel from the
// router to the worker's JSON logs, and a real Prometheus server started with
// deploy/prometheus/prometheus-local.yaml scrapes both and answers PromQL.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics_catalogue.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "strata/v1/inference.grpc.pb.h"
#include "tests/integration/child_process.h"
#include "tests/integration/test_servers.h"

namespace strata::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kRequests = 12;  // plus one that carries x-request-id metadata
constexpr char kMetadataRequestId[] = "obs-metadata-id-1";
const std::vector<std::string> kStages = {metrics::kStageRouterQueue, metrics::kStageReplicaQueue,
                                          metrics::kStagePrefill, metrics::kStageDecode,
                                          metrics::kStageStream};

// Starts `argv` and waits for "<prefix> ... on HOST:PORT metrics HOST:PORT".
absl::StatusOr<ServerProcess> Launch(std::vector<std::string> argv, const std::string& name,
                                     const std::string& prefix, const std::string& log_dir) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      ChildProcess::Start({std::move(argv), log_dir, name, std::nullopt});
  if (!process.ok()) return process.status();
  ServerProcess server;
  server.process = *std::move(process);
  absl::StatusOr<std::string> line =
      server.process->WaitForStdoutLine(prefix, std::chrono::seconds(30));
  if (!line.ok()) return line.status();
  std::smatch match;
  static const std::regex kAddresses(R"( on (\S+) metrics ([^\s,]+))");
  if (!std::regex_search(*line, match, kAddresses)) {
    return absl::InternalError(absl::StrCat("no addresses in '", *line, "'"));
  }
  server.address = match[1];
  server.metrics_address = match[2];
  return server;
}

// One Generate call; `metadata_request_id` goes out as x-request-id when set.
grpc::Status Generate(const std::string& address, const std::string& metadata_request_id) {
  auto stub =
      v1::Inference::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!metadata_request_id.empty()) {
    context.AddMetadata(metrics::kRequestIdMetadataKey, metadata_request_id);
  }
  v1::GenerateRequest request;
  request.set_text("Once upon a time");
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_stopping()->set_max_tokens(24);
  request.mutable_stopping()->set_ignore_eos(true);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub->Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
  }
  return reader->Finish();
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  const int port = ntohs(address.sin_port);
  close(fd);
  return port;
}

std::string UrlEncode(const std::string& text) {
  std::string encoded;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      encoded += static_cast<char>(c);
    } else {
      encoded += absl::StrCat("%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return encoded;
}

std::string Body(const absl::StatusOr<std::string>& response) {
  return response.ok() ? *response : "";
}

class LiveMetricsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    absl::StatusOr<ServerProcess> worker =
        Launch({WorkerBinary(), "--model", STRATA_MODEL_DIR, "--listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"},
               "worker", "strata-worker: listening on", dir_->path());
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = new ServerProcess(*std::move(worker));
    ASSERT_TRUE(WaitUntilServing(*worker_).ok());
    absl::StatusOr<ServerProcess> router =
        Launch({RouterBinary(), "--backend", worker_->address, "--listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"},
               "router", "strata-router: serving on", dir_->path());
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = new ServerProcess(*std::move(router));
    ASSERT_TRUE(WaitUntilServing(*router_).ok());
    // Concurrent callers, so requests share batches as they would in service.
    std::vector<std::thread> callers;
    std::atomic<int> failures = 0;
    for (int caller = 0; caller < 3; ++caller) {
      callers.emplace_back([&] {
        for (int i = 0; i < kRequests / 3; ++i) {
          if (!Generate(router_->address, "").ok()) failures.fetch_add(1);
        }
      });
    }
    for (std::thread& caller : callers) caller.join();
    ASSERT_EQ(failures.load(), 0);
    ASSERT_TRUE(Generate(router_->address, kMetadataRequestId).ok());
  }

  static void TearDownTestSuite() {
    delete router_;
    delete worker_;
    delete dir_;
  }

  static std::string Scrape(const ServerProcess& server) {
    absl::StatusOr<std::string> body = HttpGet(server.metrics_address, "/metrics");
    EXPECT_TRUE(body.ok()) << body.status();
    return Body(body);
  }

  static TempDir* dir_;
  static ServerProcess* worker_;
  static ServerProcess* router_;
};

TempDir* LiveMetricsTest::dir_ = nullptr;
ServerProcess* LiveMetricsTest::worker_ = nullptr;
ServerProcess* LiveMetricsTest::router_ = nullptr;

TEST_F(LiveMetricsTest, PromtoolAcceptsRouterAndWorkerMetrics) {
  for (const ServerProcess* server : {router_, worker_}) {
    const std::string exposition = Scrape(*server);
    ASSERT_THAT(exposition, HasSubstr("strata_"));
    const CommandResult result = RunCommand({STRATA_PROMTOOL, "check", "metrics"}, exposition);
    EXPECT_EQ(result.exit_code, 0) << server->process->name() << ":\n"
                                   << result.stdout_text << result.stderr_text;
  }
}

TEST_F(LiveMetricsTest, WorkerExportsGatewayInferenceExtensionSignals) {
  const std::string exposition = Scrape(*worker_);
  EXPECT_TRUE(MetricValue(exposition, metrics::kRequestsWaiting).has_value());
  EXPECT_TRUE(MetricValue(exposition, metrics::kRequestsRunning).has_value());
  const std::optional<double> usage = MetricValue(exposition, metrics::kKvCacheUsage);
  ASSERT_TRUE(usage.has_value());
  EXPECT_GE(*usage, 0.0);
  EXPECT_LE(*usage, 1.0);
  const std::optional<double> blocks = MetricValue(exposition, metrics::kKvBlocksTotal);
  ASSERT_TRUE(blocks.has_value());
  const std::regex info(
      R"re(strata_kv_cache_config_info\{block_size="(\d+)",num_gpu_blocks="(\d+)"\} 1)re");
  std::smatch match;
  ASSERT_TRUE(std::regex_search(exposition, match, info)) << exposition;
  EXPECT_GT(std::stoi(match[1]), 0);
  EXPECT_EQ(std::stod(match[2]), *blocks);
  EXPECT_GT(MetricValue(exposition, "strata_rank_weight_bytes{rank=\"0\"}").value_or(0), 0);
  EXPECT_GT(MetricValue(exposition, "strata_rank_kv_cache_bytes{rank=\"0\"}").value_or(0), 0);
}

TEST_F(LiveMetricsTest, WorkerExportsEngineStepHistogramsAndHealthyCollectiveErrors) {
  const std::string exposition = Scrape(*worker_);
  const std::optional<double> steps = MetricValue(exposition, metrics::kEngineSteps);
  ASSERT_TRUE(steps.has_value());
  EXPECT_GT(*steps, 0.0);
  // Every step the engine ran, once in each histogram (the worker is idle now).
  for (const char* histogram : {metrics::kEngineStepDuration, metrics::kEngineBatchTokens,
                                metrics::kEngineBatchSequences}) {
    SCOPED_TRACE(histogram);
    EXPECT_EQ(MetricValue(exposition, absl::StrCat(histogram, "_count")), steps);
    EXPECT_EQ(MetricValue(exposition, absl::StrCat(histogram, "_bucket{le=\"+Inf\"}")), steps);
    EXPECT_GT(MetricValue(exposition, absl::StrCat(histogram, "_sum")).value_or(0), 0.0);
  }
  // At least one token and one sequence per step.
  EXPECT_GE(*MetricValue(exposition, absl::StrCat(metrics::kEngineBatchTokens, "_sum")),
            *MetricValue(exposition, absl::StrCat(metrics::kEngineBatchSequences, "_sum")));
  EXPECT_GE(*MetricValue(exposition, absl::StrCat(metrics::kEngineBatchSequences, "_sum")), *steps);
  for (const char* op : metrics::kCollectiveOps) {
    EXPECT_EQ(MetricValue(exposition, absl::StrCat(metrics::kRankCollectiveErrors, "{op=\"", op,
                                                   "\",rank=\"0\"}")),
              0.0)
        << op;
  }
}

TEST_F(LiveMetricsTest, StageMeansAddUpToTheEndToEndMean) {
  const std::string exposition = Scrape(*router_) + Scrape(*worker_);
  const double requests = kRequests + 1;
  double sum_of_stage_means = 0.0;
  for (const std::string& stage : kStages) {
    SCOPED_TRACE(stage);
    const std::string labels = absl::StrCat("{stage=\"", stage, "\"}");
    const std::optional<double> sum =
        MetricValue(exposition, absl::StrCat(metrics::kRequestStageDuration, "_sum", labels));
    const std::optional<double> count =
        MetricValue(exposition, absl::StrCat(metrics::kRequestStageDuration, "_count", labels));
    ASSERT_TRUE(sum.has_value() && count.has_value());
    EXPECT_EQ(*count, requests);
    sum_of_stage_means += *sum / *count;
  }
  const std::string e2e = metrics::kRouterRequestDuration;
  const std::optional<double> e2e_sum = MetricValue(exposition, e2e + "_sum");
  const std::optional<double> e2e_count = MetricValue(exposition, e2e + "_count");
  ASSERT_TRUE(e2e_sum.has_value() && e2e_count.has_value());
  ASSERT_EQ(*e2e_count, requests);
  const double e2e_mean = *e2e_sum / *e2e_count;
  ASSERT_GT(e2e_mean, 0.0);
  EXPECT_NEAR(sum_of_stage_means, e2e_mean, 0.10 * e2e_mean);
  // The worker's own stages cover most of the time: stream is the rest.
  const double stream =
      *MetricValue(exposition, absl::StrCat(metrics::kRequestStageDuration, "_sum{stage=\"",
                                            metrics::kStageStream, "\"}")) /
      requests;
  EXPECT_LT(stream, 0.5 * e2e_mean);
}

TEST_F(LiveMetricsTest, RequestIdsReachTheWorkerLogs) {
  std::set<std::string> router_ids, worker_ids;
  for (const auto& [process, ids] :
       {std::pair{router_->process.get(), &router_ids}, {worker_->process.get(), &worker_ids}}) {
    for (const std::string& line : Lines(process->Stderr())) {
      SCOPED_TRACE(line);
      nlohmann::json parsed;
      ASSERT_NO_THROW(parsed = nlohmann::json::parse(line));
      const std::string message = parsed["msg"];
      if (message.rfind("generate:", 0) == 0) {
        ASSERT_TRUE(parsed.contains("request_id")) << "a line about a request without its id";
        ids->insert(parsed["request_id"]);
      }
    }
  }
  EXPECT_EQ(router_ids.size(), static_cast<size_t>(kRequests + 1));
  EXPECT_TRUE(router_ids.contains(kMetadataRequestId));
  // The worker knows every request by the router's id.
  EXPECT_EQ(worker_ids, router_ids);
}

TEST_F(LiveMetricsTest, PrometheusScrapesTheClusterAndAnswersQueries) {
  TempDir prometheus_dir;
  const std::string config_dir = prometheus_dir.File("config");
  std::filesystem::create_directories(config_dir + "/targets");
  const std::string source = std::string(STRATA_SOURCE_DIR) + "/deploy/prometheus/";
  std::filesystem::copy_file(source + "prometheus-local.yaml",
                             config_dir + "/prometheus-local.yaml");
  std::filesystem::copy_file(source + "strata-rules.yaml", config_dir + "/strata-rules.yaml");
  std::ofstream(config_dir + "/targets/router.json")
      << nlohmann::json::array(
             {{{"targets", {router_->metrics_address}}, {"labels", {{"pod", "router-0"}}}}})
             .dump();
  std::ofstream(config_dir + "/targets/worker.json")
      << nlohmann::json::array(
             {{{"targets", {worker_->metrics_address}}, {"labels", {{"pod", "worker-0"}}}}})
             .dump();
  const std::string address = absl::StrCat("127.0.0.1:", FreePort());
  absl::StatusOr<std::unique_ptr<ChildProcess>> prometheus = ChildProcess::Start(
      {{STRATA_PROMETHEUS, "--config.file=" + config_dir + "/prometheus-local.yaml",
        "--storage.tsdb.path=" + prometheus_dir.File("tsdb"), "--web.listen-address=" + address,
        "--log.level=warn"},
       prometheus_dir.path(),
       "prometheus",
       std::nullopt});
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  // Polls `query` until `accept` likes its result vector (30 s at most).
  const auto query = [&](const std::string& promql, auto accept) -> nlohmann::json {
    nlohmann::json result;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string body = Body(HttpGet(address, "/api/v1/query?query=" + UrlEncode(promql)));
      const size_t start = body.find("\r\n\r\n");
      if (start != std::string::npos || body.rfind("{", 0) == 0) {
        const nlohmann::json parsed = nlohmann::json::parse(
            start == std::string::npos ? body : body.substr(start + 4), nullptr, false);
        if (!parsed.is_discarded() && parsed.value("status", "") == "success") {
          result = parsed["data"]["result"];
          if (accept(result)) return result;
        }
      }
      if (!(*prometheus)->Running()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    ADD_FAILURE() << promql << " gave " << result.dump() << "\nprometheus stderr:\n"
                  << (*prometheus)->Stderr();
    return result;
  };

  const nlohmann::json up = query("up{job=~\"strata-router|strata-worker\"} == 1",
                                  [](const nlohmann::json& r) { return r.size() == 2; });
  EXPECT_EQ(up.size(), 2u);
  const nlohmann::json count = query(
      "sum(strata_router_requests_total{job=\"strata-router\"})", [](const nlohmann::json& r) {
        return r.size() == 1 && r[0]["value"][1] == std::to_string(kRequests + 1);
      });
  ASSERT_EQ(count.size(), 1u);
  EXPECT_EQ(count[0]["value"][1], std::to_string(kRequests + 1));
  const nlohmann::json worker_count = query(
      "sum(strata_requests_total{job=\"strata-worker\",code=\"OK\"})", [](const nlohmann::json& r) {
        return r.size() == 1 && r[0]["value"][1] == std::to_string(kRequests + 1);
      });
  EXPECT_EQ(worker_count.size(), 1u);
  const nlohmann::json quantiles = query(
      "histogram_quantile(0.9, sum by (stage, le) (strata_request_stage_duration_seconds_bucket))",
      [](const nlohmann::json& r) { return r.size() == 5; });
  std::set<std::string> stages;
  for (const nlohmann::json& series : quantiles) {
    stages.insert(series["metric"]["stage"].get<std::string>());
    EXPECT_NE(series["value"][1], "NaN") << series.dump();
  }
  EXPECT_EQ(stages, std::set<std::string>(kStages.begin(), kStages.end()));
  // The project's recording rules evaluate against live series too.
  const nlohmann::json recorded = query("strata:request_stage_duration_seconds:mean5m",
                                        [](const nlohmann::json& r) { return r.size() == 5; });
  EXPECT_EQ(recorded.size(), 5u);
}

}  // namespace
}  // namespace strata::testing

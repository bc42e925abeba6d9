// strata-worker and strata-router as processes: start-up on broken model
// folders, health while loading, reflection, and clean shutdown on signals.
#include <signal.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/inference_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"
#include "tests/integration/test_servers.h"

namespace strata::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using ServingStatus = grpc::health::v1::HealthCheckResponse;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << contents;
}

// A copy of the bundled model in `dir`.
void CopyBundledModel(const std::string& dir) {
  for (const auto& entry : fs::directory_iterator(STRATA_MODEL_DIR)) {
    fs::copy_file(entry.path(), fs::path(dir) / entry.path().filename());
  }
}

// Runs strata-worker on `model_dir` until it exits; expects exit code 1 and
// exactly one line on stderr, "strata-worker: ...", which it returns.
std::string FailedStartLine(const std::string& model_dir) {
  const CommandResult result =
      RunCommand({WorkerBinary(), "--model", model_dir, "--listen", "127.0.0.1:0",
                  "--metrics-listen", "127.0.0.1:0", "--log-level", "error"},
                 std::nullopt, std::chrono::seconds(60));
  EXPECT_EQ(result.exit_code, 1) << result.stderr_text;
  const std::vector<std::string> lines = Lines(result.stderr_text);
  EXPECT_EQ(lines.size(), 1u) << result.stderr_text;
  if (lines.empty()) return "";
  EXPECT_THAT(lines[0], StartsWith("strata-worker: "));
  return lines[0];
}

class BrokenModelTest : public ::testing::Test {
 protected:
  void SetUp() override { CopyBundledModel(dir_.path()); }
  std::string ModelFile(const std::string& name) const { return dir_.File(name); }

  // The safetensors header as JSON, and the bytes after it.
  void ReadSafetensors(nlohmann::json& header, std::string& data) const {
    const std::string file = ReadFile(ModelFile("model.safetensors"));
    uint64_t header_size = 0;
    std::memcpy(&header_size, file.data(), sizeof(header_size));
    header = nlohmann::json::parse(file.substr(8, header_size));
    data = file.substr(8 + header_size);
  }
  void WriteSafetensors(const nlohmann::json& header, const std::string& data) const {
    std::string header_text = header.dump();
    header_text.append((8 - header_text.size() % 8) % 8, ' ');
    const uint64_t header_size = header_text.size();
    std::string file(reinterpret_cast<const char*>(&header_size), sizeof(header_size));
    file += header_text;
    file += data;
    WriteFile(ModelFile("model.safetensors"), file);
  }
  void EditConfig(const std::function<void(nlohmann::json&)>& edit) const {
    nlohmann::json config = nlohmann::json::parse(ReadFile(ModelFile("config.json")));
    edit(config);
    WriteFile(ModelFile("config.json"), config.dump(2));
  }

  TempDir dir_;
};

TEST_F(BrokenModelTest, MissingWeightsFileIsNamed) {
  fs::remove(ModelFile("model.safetensors"));
  EXPECT_THAT(FailedStartLine(dir_.path()), HasSubstr("model.safetensors"));
}

TEST_F(BrokenModelTest, MissingTokenizerFileIsNamed) {
  fs::remove(ModelFile("tokenizer.json"));
  EXPECT_THAT(FailedStartLine(dir_.path()), HasSubstr("tokenizer.json"));
}

TEST_F(BrokenModelTest, MissingModelFolderIsNamed) {
  const std::string missing = dir_.File("no-such-model");
  EXPECT_THAT(FailedStartLine(missing), HasSubstr("no-such-model"));
}

TEST_F(BrokenModelTest, TruncatedSafetensorsIsNamed) {
  const std::string file = ReadFile(ModelFile("model.safetensors"));
  WriteFile(ModelFile("model.safetensors"), file.substr(0, file.size() / 2));
  EXPECT_THAT(FailedStartLine(dir_.path()), HasSubstr("model.safetensors"));
}

TEST_F(BrokenModelTest, HeaderOffsetsPastTheFileAreNamed) {
  nlohmann::json header;
  std::string data;
  ReadSafetensors(header, data);
  // Move one tensor (its size unchanged) to start past the end of the data.
  for (auto& [name, tensor] : header.items()) {
    if (name == "__metadata__") continue;
    const uint64_t begin = tensor["data_offsets"][0];
    const uint64_t end = tensor["data_offsets"][1];
    tensor["data_offsets"] = {data.size() + 64, data.size() + 64 + (end - begin)};
    break;
  }
  WriteSafetensors(header, data);
  EXPECT_THAT(FailedStartLine(dir_.path()), HasSubstr("model.safetensors"));
}

TEST_F(BrokenModelTest, TensorShapeDisagreeingWithConfigIsNamed) {
  EditConfig([](nlohmann::json& config) { config["intermediate_size"] = 176; });
  const std::string line = FailedStartLine(dir_.path());
  EXPECT_THAT(line, HasSubstr("model.safetensors"));
  EXPECT_THAT(line, HasSubstr("mlp"));
}

TEST_F(BrokenModelTest, UnsupportedArchitectureIsNamed) {
  EditConfig([](nlohmann::json& config) {
    config["architectures"] = {"GPT2LMHeadModel"};
    config["model_type"] = "gpt2";
  });
  const std::string line = FailedStartLine(dir_.path());
  EXPECT_THAT(line, HasSubstr("config.json"));
  EXPECT_THAT(line, HasSubstr("GPT2LMHeadModel"));
}

// A random-weights model big enough that loading takes a noticeable moment,
// with the bundled tokenizer (vocabulary 512).
void WriteSlowToLoadModel(const std::string& dir) {
  CopyBundledModel(dir);
  fs::remove(fs::path(dir) / "model.safetensors");
  nlohmann::json config = nlohmann::json::parse(ReadFile(fs::path(dir) / "config.json"));
  config["hidden_size"] = 1024;
  config["intermediate_size"] = 2816;
  config["num_hidden_layers"] = 12;
  config["num_attention_heads"] = 16;
  config["num_key_value_heads"] = 4;
  config["head_dim"] = 64;
  config["max_position_embeddings"] = 512;
  WriteFile(fs::path(dir) / "config.json", config.dump(2));
}

TEST(WorkerProcessTest, HealthGoesFromNotServingToServingAsTheModelLoads) {
  TempDir dir;
  WriteSlowToLoadModel(dir.File(""));
  absl::StatusOr<ServerProcess> worker =
      LaunchWorker(dir.path(), {"--random-weights", "--kv-blocks", "64"}, dir.path());
  ASSERT_TRUE(worker.ok()) << worker.status();

  // From the moment the port is known: NOT_SERVING (and UNAVAILABLE calls)
  // while loading, then SERVING, never back.
  std::vector<ServingStatus::ServingStatus> seen;
  bool refused_while_loading = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    const auto status = CheckHealth(worker->address, "strata.v1.Inference");
    if (seen.empty() || seen.back() != status) seen.push_back(status);
    if (status == ServingStatus::SERVING) break;
    if (status == ServingStatus::NOT_SERVING && !refused_while_loading) {
      cli::InferenceClient client(worker->address);
      absl::StatusOr<v1::ModelInfo> info = client.GetModelInfo();
      if (!info.ok() && info.status().code() == absl::StatusCode::kUnavailable) {
        EXPECT_THAT(std::string(info.status().message()), HasSubstr("model is still loading"));
        refused_while_loading = true;
      }
    }
    ASSERT_TRUE(worker->process->Running()) << worker->process->Stderr();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.front(), ServingStatus::NOT_SERVING);
  EXPECT_EQ(seen.back(), ServingStatus::SERVING);
  EXPECT_TRUE(refused_while_loading);
  EXPECT_EQ(CheckHealth(worker->address, ""), ServingStatus::SERVING);
  cli::InferenceClient client(worker->address);
  absl::StatusOr<v1::ModelInfo> info = client.GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model_name(), fs::path(dir.path()).filename().string());
  EXPECT_EQ(info->dtype(), "BF16");
}

TEST(WorkerProcessTest, WritesTheReadyFileAndExitsZeroOnSigterm) {
  TempDir dir;
  const std::string ready_file = dir.File("ready.json");
  absl::StatusOr<ServerProcess> worker =
      LaunchWorker(STRATA_MODEL_DIR, {"--ready-file", ready_file}, dir.path());
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE(WaitUntilServing(*worker).ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!fs::exists(ready_file) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const nlohmann::json ready = nlohmann::json::parse(ReadFile(ready_file));
  EXPECT_EQ(ready["listen"], worker->address);
  EXPECT_EQ(ready["metrics"], worker->metrics_address);
  EXPECT_EQ(ready["pid"], worker->process->pid());

  worker->process->Signal(SIGTERM);
  EXPECT_EQ(worker->process->WaitForExit(std::chrono::seconds(15)), 0) << worker->process->Stderr();
}

TEST(WorkerProcessTest, ExitsZeroOnSigintWhileLoading) {
  TempDir dir;
  WriteSlowToLoadModel(dir.File(""));
  absl::StatusOr<ServerProcess> worker =
      LaunchWorker(dir.path(), {"--random-weights", "--kv-blocks", "64"}, dir.path());
  ASSERT_TRUE(worker.ok()) << worker.status();
  worker->process->Signal(SIGINT);
  EXPECT_EQ(worker->process->WaitForExit(std::chrono::seconds(10)), 0) << worker->process->Stderr();
}

TEST(WorkerProcessTest, RouterAndWorkerServeReflection) {
  TempDir dir;
  absl::StatusOr<ServerProcess> worker = LaunchWorker(STRATA_MODEL_DIR, {}, dir.path());
  ASSERT_TRUE(worker.ok()) << worker.status();
  absl::StatusOr<ServerProcess> router = LaunchRouter(worker->address, dir.path());
  ASSERT_TRUE(router.ok()) << router.status();
  for (const ServerProcess* server : {&*worker, &*router}) {
    absl::StatusOr<std::vector<std::string>> services = ReflectedServices(server->address);
    ASSERT_TRUE(services.ok()) << services.status();
    EXPECT_THAT(*services, Contains("strata.v1.Inference"));
    EXPECT_THAT(*services, Contains("grpc.health.v1.Health"));
  }
}

TEST(WorkerProcessTest, RouterFollowsTheWorkersHealthAndExitsZeroOnSigint) {
  TempDir dir;
  WriteSlowToLoadModel(dir.File(""));
  absl::StatusOr<ServerProcess> worker =
      LaunchWorker(dir.path(), {"--random-weights", "--kv-blocks", "64"}, dir.path());
  ASSERT_TRUE(worker.ok()) << worker.status();
  absl::StatusOr<ServerProcess> router = LaunchRouter(worker->address, dir.path());
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_TRUE(WaitUntilServing(*worker, std::chrono::seconds(120)).ok());
  EXPECT_TRUE(WaitUntilServing(*router, std::chrono::seconds(10)).ok());

  // The worker goes away: the router stops serving, and says why it refuses.
  worker->process->Signal(SIGTERM);
  ASSERT_EQ(worker->process->WaitForExit(std::chrono::seconds(15)), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (CheckHealth(router->address, "strata.v1.Inference") == ServingStatus::SERVING &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(CheckHealth(router->address, "strata.v1.Inference"), ServingStatus::NOT_SERVING);
  cli::InferenceClient client(router->address);
  v1::GenerateRequest request;
  request.set_text("Once");
  const absl::Status status = client.Generate(request, [](const v1::GenerateResponse&) {});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("no backend available"));

  router->process->Signal(SIGINT);
  EXPECT_EQ(router->process->WaitForExit(std::chrono::seconds(15)), 0) << router->process->Stderr();
}

TEST(WorkerProcessTest, AClientCancellingMidStreamThroughTheRouterFreesTheRequest) {
  TempDir dir;
  WriteSlowToLoadModel(dir.File(""));
  absl::StatusOr<ServerProcess> worker =
      LaunchWorker(dir.path(), {"--random-weights", "--kv-blocks", "64"}, dir.path());
  ASSERT_TRUE(worker.ok()) << worker.status();
  absl::StatusOr<ServerProcess> router = LaunchRouter(worker->address, dir.path());
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_TRUE(WaitUntilServing(*worker, std::chrono::seconds(120)).ok());
  ASSERT_TRUE(WaitUntilServing(*router, std::chrono::seconds(10)).ok());

  auto stub = v1::Inference::NewStub(
      grpc::CreateChannel(router->address, grpc::InsecureChannelCredentials()));
  v1::GenerateRequest request;
  request.set_text("Once upon a time");
  request.mutable_stopping()->set_max_tokens(480);
  request.mutable_stopping()->set_ignore_eos(true);
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(reader->Read(&response));
  absl::StatusOr<std::string> metrics = HttpGet(worker->metrics_address, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(MetricValue(*metrics, "strata_requests_running"), 1.0);
  const std::optional<double> blocks_total = MetricValue(*metrics, "strata_kv_cache_blocks");
  EXPECT_LT(MetricValue(*metrics, "strata_kv_cache_blocks_free"), blocks_total);

  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // The worker hears of it through the router and frees the request.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool freed = false;
  while (!freed && std::chrono::steady_clock::now() < deadline) {
    metrics = HttpGet(worker->metrics_address, "/metrics");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    freed = MetricValue(*metrics, "strata_requests_running") == 0.0 &&
            MetricValue(*metrics, "strata_kv_cache_blocks_free") == blocks_total &&
            MetricValue(*metrics, "strata_requests_total{code=\"CANCELLED\"}") == 1.0;
    if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(freed) << *metrics;
  EXPECT_LT(MetricValue(*metrics, "strata_generation_tokens_total").value_or(480), 480);
}

}  // namespace
}  // namespace strata::testing

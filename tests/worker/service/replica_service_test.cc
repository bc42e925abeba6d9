// The worker's strata.v1.Replica service (load reports) served in-process on
// 127.0.0.1 over an engine whose stats the test sets, and the router's side
// of the contract: its prefix hashes equal the engine's, and its load watcher
// reads the reports.
#include "worker/service/replica_service.h"

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "router/backend.h"
#include "router/balancer.h"
#include "router/load_watcher.h"
#include "worker/engine/engine_factory.h"
#include "worker/engine/kv_block_manager.h"
#include "worker/model/model_config.h"
#include "worker/service/inference_service.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::service {
namespace {

using ::testing::ElementsAre;

// An engine that serves only Stats(), as the test sets them.
class StatsEngine final : public engine::Engine {
 public:
  void Set(engine::EngineStats stats) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = std::move(stats);
  }
  absl::Status Submit(engine::GenerationRequest, OutputCallback) override {
    return absl::UnimplementedError("stats only");
  }
  void Cancel(std::string_view) override {}
  engine::EngineStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  const tokenizer::Tokenizer& tokenizer() const override { std::abort(); }
  const model::ModelConfig& model_config() const override { return config_; }
  void Shutdown() override {}

 private:
  model::ModelConfig config_;
  mutable std::mutex mu_;
  engine::EngineStats stats_;
};

engine::EngineStats Load(int waiting, int running, int used, std::vector<uint64_t> hashes = {}) {
  engine::EngineStats stats;
  stats.waiting = waiting;
  stats.running = running;
  stats.kv_blocks_total = 100;
  stats.kv_blocks_used = used;
  stats.kv_blocks_free = 100 - used;
  stats.prefix_block_hashes = std::move(hashes);
  return stats;
}

class ReplicaServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ReplicaService::Options options;
    options.block_size = 4;
    options.poll_interval = std::chrono::milliseconds(10);
    service_ = std::make_unique<ReplicaService>(options);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    address_ = absl::StrCat("127.0.0.1:", port);
    stub_ = v1::Replica::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    service_->Stop();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  StatsEngine engine_;
  std::unique_ptr<ReplicaService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<v1::Replica::Stub> stub_;
};

TEST_F(ReplicaServiceTest, RefusesUnavailableUntilTheEngineIsAttached) {
  grpc::ClientContext context;
  auto reader = stub_->WatchLoad(&context, {});
  v1::LoadReport report;
  EXPECT_FALSE(reader->Read(&report));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "model is still loading");
}

TEST_F(ReplicaServiceTest, ReportsAtOnceThenOnEveryChange) {
  engine_.Set(Load(2, 1, 10, {7, 8}));
  service_->AttachEngine(&engine_);
  grpc::ClientContext context;
  v1::WatchLoadRequest request;
  request.set_interval_ms(60000);
  auto reader = stub_->WatchLoad(&context, request);
  v1::LoadReport report;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(reader->Read(&report));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(report.sequence(), 1u);
  EXPECT_EQ(report.waiting(), 2);
  EXPECT_EQ(report.running(), 1);
  EXPECT_FLOAT_EQ(report.kv_usage(), 0.1f);
  EXPECT_EQ(report.kv_blocks_free(), 90);
  EXPECT_EQ(report.block_size(), 4);
  EXPECT_THAT(report.prefix_hashes(), ElementsAre(7u, 8u));

  engine_.Set(Load(0, 3, 30, {7, 8, 9}));
  ASSERT_TRUE(reader->Read(&report));
  EXPECT_EQ(report.sequence(), 2u);
  EXPECT_EQ(report.waiting(), 0);
  EXPECT_EQ(report.running(), 3);
  EXPECT_THAT(report.prefix_hashes(), ElementsAre(7u, 8u, 9u));
  context.TryCancel();
  while (reader->Read(&report)) {
  }
  reader->Finish().IgnoreError();
}

TEST_F(ReplicaServiceTest, ReportsAtLeastEveryIntervalAndCapsThePrefixSummary) {
  engine_.Set(Load(1, 1, 1, {1, 2, 3, 4, 5}));
  service_->AttachEngine(&engine_);
  grpc::ClientContext context;
  v1::WatchLoadRequest request;
  request.set_interval_ms(100);
  request.set_max_prefix_hashes(2);
  auto reader = stub_->WatchLoad(&context, request);
  v1::LoadReport report;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(reader->Read(&report));
    EXPECT_THAT(report.prefix_hashes(), ElementsAre(1u, 2u));
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, std::chrono::milliseconds(250));
  EXPECT_LT(elapsed, std::chrono::seconds(2));
  context.TryCancel();
  while (reader->Read(&report)) {
  }
  reader->Finish().IgnoreError();
}

TEST_F(ReplicaServiceTest, StopEndsEveryStream) {
  engine_.Set(Load(0, 0, 0));
  service_->AttachEngine(&engine_);
  grpc::ClientContext context;
  auto reader = stub_->WatchLoad(&context, {});
  v1::LoadReport report;
  ASSERT_TRUE(reader->Read(&report));
  service_->Stop();
  EXPECT_FALSE(reader->Read(&report));
  EXPECT_TRUE(reader->Finish().ok());
}

TEST_F(ReplicaServiceTest, TheRoutersLoadWatcherReadsTheReports) {
  engine_.Set(Load(4, 2, 50, {11, 5}));
  service_->AttachEngine(&engine_);
  router::Backend backend(address_, nullptr);
  router::LoadWatcher watcher(backend);
  watcher.Start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!backend.Load().reported && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const router::BackendLoad load = backend.Load();
  ASSERT_TRUE(load.reported);
  EXPECT_EQ(load.waiting, 4);
  EXPECT_EQ(load.running, 2);
  EXPECT_DOUBLE_EQ(load.kv_usage, 0.5);
  EXPECT_EQ(load.block_size, 4);
  ASSERT_NE(load.prefix_hashes, nullptr);
  EXPECT_THAT(*load.prefix_hashes, ElementsAre(5u, 11u));  // sorted for lookup
  EXPECT_DOUBLE_EQ(router::LoadScore(backend), 6.5);
  watcher.Stop();
}

// The real engine on the bundled model behind a worker's two services, with
// the router's load watcher reading: reports follow the engine's load.
TEST(ReplicaServiceEngineTest, ReportsFollowTheRealEnginesLoad) {
  engine::EngineOptions options;
  options.model.model_dir = STRATA_MODEL_DIR;
  options.model.num_threads = 1;
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine = engine::CreateEngine(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  InferenceService inference(nullptr);
  inference.AttachEngine(engine->get(), ModelDescription{"stories260k", "F32", 0});
  ReplicaService::Options replica_options;
  replica_options.block_size = options.model.kv_block_size;
  ReplicaService replica(replica_options);
  replica.AttachEngine(engine->get());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&inference);
  builder.RegisterService(&replica);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  const std::string address = absl::StrCat("127.0.0.1:", port);

  router::Backend backend(address, nullptr);
  router::LoadWatcher watcher(backend);
  watcher.Start();
  // Streams that run long enough to be seen.
  auto stub =
      v1::Inference::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < 4; ++i) {
    v1::GenerateRequest request;
    request.set_text("Once upon a time");
    request.mutable_stopping()->set_max_tokens(480);
    request.mutable_stopping()->set_ignore_eos(true);
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(stub->Generate(contexts.back().get(), request));
  }
  v1::GenerateResponse response;
  for (auto& reader : readers) ASSERT_TRUE(reader->Read(&response));
  const auto busy_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  router::BackendLoad load;
  while (std::chrono::steady_clock::now() < busy_deadline) {
    load = backend.Load();
    if (load.reported && load.running > 0 && load.kv_usage > 0.0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GT(load.running, 0);
  EXPECT_GT(load.kv_usage, 0.0);
  EXPECT_EQ(load.block_size, options.model.kv_block_size);
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) {
    while (reader->Read(&response)) {
    }
    reader->Finish().IgnoreError();
  }
  const auto idle_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < idle_deadline) {
    load = backend.Load();
    if (load.reported && load.running + load.waiting == 0 && load.kv_usage == 0.0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(load.running + load.waiting, 0);
  EXPECT_EQ(load.kv_usage, 0.0);
  watcher.Stop();
  replica.Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  (*engine)->Shutdown();
}

TEST(PrefixHashContractTest, TheRouterHashesPromptsAsTheKvBlockManagerDoes) {
  std::vector<int32_t> ids;
  for (int i = 0; i < 37; ++i) ids.push_back((i * 7919) % 512);
  constexpr int32_t kBlockSize = 8;
  const std::vector<uint64_t> routed = router::PrefixBlockHashes(ids, kBlockSize, 100);
  ASSERT_EQ(routed.size(), 4u);  // whole blocks only
  uint64_t parent = engine::KvBlockManager::kRootHash;
  for (size_t block = 0; block < routed.size(); ++block) {
    parent = engine::KvBlockManager::HashBlock(
        parent, std::span<const int32_t>(ids).subspan(block * kBlockSize, kBlockSize));
    EXPECT_EQ(routed[block], parent) << "block " << block;
  }
  EXPECT_EQ(router::PrefixBlockHashes(ids, kBlockSize, 2).size(), 2u);
}

TEST(PrefixHashContractTest, KvBlockManagerListsRegisteredBlocksInUseThenMostRecentlyCached) {
  engine::KvBlockManager blocks(/*num_blocks=*/4, /*block_size=*/2, /*enable_prefix_caching=*/true);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6};
  std::vector<int32_t> ids;
  uint64_t parent = engine::KvBlockManager::kRootHash;
  std::vector<uint64_t> hashes;
  for (int block = 0; block < 3; ++block) {
    ids.push_back(blocks.Allocate());
    const std::span<const int32_t> content = std::span<const int32_t>(tokens).subspan(block * 2, 2);
    parent = engine::KvBlockManager::HashBlock(parent, content);
    hashes.push_back(parent);
    blocks.Register(ids.back(), parent, content);
  }
  EXPECT_THAT(blocks.PrefixHashes(), ElementsAre(hashes[0], hashes[1], hashes[2]));
  // Released last to first: the first block is the most recently cached.
  blocks.Release(ids);
  EXPECT_THAT(blocks.PrefixHashes(), ElementsAre(hashes[0], hashes[1], hashes[2]));
  EXPECT_THAT(blocks.PrefixHashes(2), ElementsAre(hashes[0], hashes[1]));
  ASSERT_TRUE(blocks.CheckConsistency().ok());
}

}  // namespace
}  // namespace strata::service

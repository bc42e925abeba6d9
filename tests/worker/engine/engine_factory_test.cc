#include "worker/engine/engine_factory.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/model_config.h"

namespace strata::engine {
namespace {

using ::testing::HasSubstr;

model::ModelConfig Stories260kShape() {
  model::ModelConfig config;
  config.num_hidden_layers = 5;
  config.num_key_value_heads = 4;
  config.head_dim = 8;
  return config;
}

TEST(EngineFactoryTest, KvBytesPerTokenCountsKeysAndValuesOfEveryLayer) {
  EXPECT_EQ(KvBytesPerToken(Stories260kShape()), 5u * 2 * 4 * 8 * 4);
}

TEST(EngineFactoryTest, KvBlocksForMemoryRoundsDown) {
  // 1280 bytes per token, 20480 per 16-token block.
  EXPECT_EQ(*KvBlocksForMemory(Stories260kShape(), 16, 1 << 20), 51);
  EXPECT_EQ(*KvBlocksForMemory(Stories260kShape(), 16, 20480), 1);
  absl::StatusOr<int32_t> none = KvBlocksForMemory(Stories260kShape(), 16, 20479);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("kv_cache_memory"));
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("20480"));
}

TEST(EngineFactoryTest, ParsesMemorySizes) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("4096B"), 4096u);
  EXPECT_EQ(*ParseByteSize("64k"), 64000u);
  EXPECT_EQ(*ParseByteSize("64KiB"), 65536u);
  EXPECT_EQ(*ParseByteSize("512MiB"), 512u << 20);
  EXPECT_EQ(*ParseByteSize("2GiB"), 2ull << 30);
  EXPECT_EQ(*ParseByteSize("1.5GB"), 1500000000u);
  EXPECT_EQ(*ParseByteSize("1 TB"), 1000000000000u);
  for (const char* bad : {"", "GiB", "12XB", "1.2.3G", "-5", "5 GiBs"}) {
    absl::StatusOr<uint64_t> parsed = ParseByteSize(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("memory size")) << bad;
  }
}

TEST(EngineFactoryTest, KvCacheMemorySizesThePoolOfTheBundledModel) {
  EngineOptions options;
  options.model.model_dir = STRATA_MODEL_DIR;
  options.model.num_threads = 1;
  options.kv_cache_memory_bytes = 1 << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = CreateEngine(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->Stats().kv_blocks_total, 51);
}

TEST(EngineFactoryTest, KvCacheMemoryAndBlockCountTogetherAreRefused) {
  EngineOptions options;
  options.model.model_dir = STRATA_MODEL_DIR;
  options.model.kv_num_blocks = 10;
  options.kv_cache_memory_bytes = 1 << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = CreateEngine(options);
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("not both"));
}

TEST(EngineFactoryTest, KvCacheMemoryTooSmallForOneBlockIsRefused) {
  EngineOptions options;
  options.model.model_dir = STRATA_MODEL_DIR;
  options.kv_cache_memory_bytes = 1000;
  absl::StatusOr<std::unique_ptr<Engine>> engine = CreateEngine(options);
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("kv_cache_memory"));
}

}  // namespace
}  // namespace strata::engine

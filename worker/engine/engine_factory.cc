#include "worker/engine/engine_factory.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/engine/batching_engine.h"

namespace strata::engine {

uint64_t KvBytesPerToken(const model::ModelConfig& config) {
  return static_cast<uint64_t>(config.num_hidden_layers) * 2 * config.num_key_value_heads *
         config.head_dim * sizeof(float);
}

absl::StatusOr<int32_t> KvBlocksForMemory(const model::ModelConfig& config, int32_t block_size,
                                          uint64_t memory_bytes) {
  if (block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block size must be positive, got ", block_size));
  }
  const uint64_t block_bytes = KvBytesPerToken(config) * static_cast<uint64_t>(block_size);
  if (block_bytes == 0) {
    return absl::InvalidArgumentError("model config gives KV blocks of 0 bytes");
  }
  const uint64_t blocks = memory_bytes / block_bytes;
  if (blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache_memory of ", memory_bytes, " bytes holds no KV block: one block of ",
                     block_size, " tokens takes ", block_bytes, " bytes for this model"));
  }
  if (blocks > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_cache_memory of ", memory_bytes, " bytes gives ", blocks, " KV blocks, more than the ",
        std::numeric_limits<int32_t>::max(), " supported; use a larger block size"));
  }
  return static_cast<int32_t>(blocks);
}

absl::StatusOr<uint64_t> ParseByteSize(std::string_view text) {
  const std::string input(text);
  auto invalid = [&input]() {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", input, "\" is not a memory size: expected a number with an optional unit ",
        "(B, k, kB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB)"));
  };
  size_t end = 0;
  while (end < input.size() &&
         (std::isdigit(static_cast<unsigned char>(input[end])) || input[end] == '.')) {
    ++end;
  }
  if (end == 0) return invalid();
  double value = 0.0;
  const auto [parsed_end, error] = std::from_chars(input.data(), input.data() + end, value);
  if (error != std::errc() || parsed_end != input.data() + end) return invalid();
  std::string unit = input.substr(end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  double multiplier = 1.0;
  if (!unit.empty() && unit != "B") {
    const char prefix = static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0])));
    const std::string rest = unit.substr(1);
    const size_t power = std::string_view("KMGT").find(prefix);
    if (power == std::string_view::npos) return invalid();
    double base;
    if (rest.empty() || rest == "B") {
      base = 1000.0;
    } else if (rest == "iB" || rest == "i") {
      base = 1024.0;
    } else {
      return invalid();
    }
    multiplier = std::pow(base, static_cast<double>(power + 1));
  }
  const double bytes = value * multiplier;
  if (!std::isfinite(bytes) || bytes >= 1.8e19) return invalid();
  return static_cast<uint64_t>(bytes);
}

absl::StatusOr<std::unique_ptr<model::Model>> LoadModel(const EngineOptions& options) {
  model::LoadOptions load = options.model;
  if (options.kv_cache_memory_bytes > 0) {
    if (load.kv_num_blocks > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("set either kv_cache_memory (", options.kv_cache_memory_bytes,
                       " bytes) or kv_num_blocks (", load.kv_num_blocks, "), not both"));
    }
    absl::StatusOr<model::ModelConfig> config = model::ModelConfig::FromDirectory(load.model_dir);
    if (!config.ok()) return config.status();
    absl::StatusOr<int32_t> blocks =
        KvBlocksForMemory(*config, load.kv_block_size, options.kv_cache_memory_bytes);
    if (!blocks.ok()) return blocks.status();
    load.kv_num_blocks = *blocks;
  }
  return model::Model::Load(load);
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(const EngineOptions& options) {
  const std::string& tokenizer_path =
      options.tokenizer_path.empty() ? options.model.model_dir : options.tokenizer_path;
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tokenizer =
      tokenizer::Tokenizer::Load(tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<std::unique_ptr<model::Model>> model = LoadModel(options);
  if (!model.ok()) return model.status();
  return CreateEngine(options, *std::move(model), *std::move(tokenizer));
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(
    const EngineOptions& options, std::unique_ptr<model::Model> model,
    std::unique_ptr<tokenizer::Tokenizer> tokenizer) {
  absl::StatusOr<std::unique_ptr<BatchingEngine>> engine =
      BatchingEngine::Create(std::move(model), std::move(tokenizer), options.scheduler);
  if (!engine.ok()) return engine.status();
  return std::unique_ptr<Engine>(*std::move(engine));
}

}  // namespace strata::engine

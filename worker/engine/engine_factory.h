// Builds the engine a worker serves: loads the tokenizer and the model from a
// Hugging Face folder, or takes ones the caller built (tests inject fakes),
// and sizes the KV cache pool.
//
// Thread-safety: the functions may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "worker/engine/engine.h"
#include "worker/engine/scheduler.h"
#include "worker/model/model.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::engine {

struct EngineOptions {
  // Model folder, random weights, KV block size (--block-size) and count,
  // kernel threads.
  model::LoadOptions model;
  // Bytes for the KV cache pool (--kv-cache-memory): sets model.kv_num_blocks
  // from the model's shape (see KvBlocksForMemory). 0: model.kv_num_blocks
  // decides (0 there: the model's default). Setting both is an error.
  uint64_t kv_cache_memory_bytes = 0;
  // tokenizer.json or the folder holding it; empty: model.model_dir.
  std::string tokenizer_path;
  // Batch limits, chunked prefill, prefix caching.
  SchedulerOptions scheduler;
};

// Bytes one token position takes in the KV cache: every layer's key and
// value, kv_heads * head_dim F32 values each.
uint64_t KvBytesPerToken(const model::ModelConfig& config);

// KV blocks of `block_size` tokens that fit in `memory_bytes`. Fails
// (INVALID_ARGUMENT, naming kv_cache_memory) when not even one block fits or
// the count overflows int32.
absl::StatusOr<int32_t> KvBlocksForMemory(const model::ModelConfig& config, int32_t block_size,
                                          uint64_t memory_bytes);

// Parses a memory size for flags: a number of bytes with an optional unit,
// "4096", "512MiB", "2GiB", "1.5GB", "64k" (k/M/G/T are powers of 1000 with a
// "B" or alone, powers of 1024 with "iB"). INVALID_ARGUMENT quoting the text.
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text);

// Loads the model CreateEngine(options) serves: Model::Load with
// kv_num_blocks from kv_cache_memory_bytes when set.
absl::StatusOr<std::unique_ptr<model::Model>> LoadModel(const EngineOptions& options);

// Loads the tokenizer (Tokenizer::Load) and the model (Model::Load, with
// kv_num_blocks from kv_cache_memory_bytes when set) and starts the engine.
// Errors name the file or option and the problem.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(const EngineOptions& options);

// Starts the engine on a model and tokenizer the caller built; options.model,
// options.kv_cache_memory_bytes and options.tokenizer_path are not used.
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(
    const EngineOptions& options, std::unique_ptr<model::Model> model,
    std::unique_ptr<tokenizer::Tokenizer> tokenizer);

}  // namespace strata::engine

// strata-engine-bench: the strata-bench workloads against an engine in this
// process (no gRPC, no worker), with the engine's options as flags: KV pool
// size, block size, batch limits, chunked prefill, prefix caching. Output and
// --json report as strata-bench's.
//
//   strata-engine-bench --model models/stories260k --concurrency 1,8,32
//                       --prompt-tokens 128 --max-tokens 64
//   strata-engine-bench --model models/stories260k --concurrency 8 --no-prefix-cache
//                       --shared-prefix-groups 4 --shared-prefix-tokens 256
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "bench/load/bench_cli.h"
#include "bench/load/engine_target.h"
#include "common/dtype.h"
#include "worker/engine/engine_factory.h"

int main(int argc, char** argv) {
  CLI::App app{"strata-engine-bench: strata-bench workloads against an in-process engine"};
  strata::engine::EngineOptions options;
  std::string kv_cache_memory;
  std::string weight_dtype;
  bool no_prefix_cache = false;
  bool no_chunked_prefill = false;
  strata::bench::BenchFlags flags;
  app.add_option("--model", options.model.model_dir, "Hugging Face model folder")->required();
  app.add_option("--tokenizer", options.tokenizer_path,
                 "tokenizer.json or its folder (default: the model folder; prompts are token "
                 "ids, so any tokenizer will do for --random-weights shapes)");
  app.add_flag("--random-weights", options.model.random_weights,
               "Random weights from config.json (no safetensors)");
  app.add_option("--weight-dtype", weight_dtype, "F32, F16 or BF16 (default: as stored)");
  app.add_option("--threads", options.model.num_threads, "CPU threads for kernels (0: all)")
      ->capture_default_str();
  app.add_option("--kv-cache-memory", kv_cache_memory,
                 "KV cache pool size, e.g. 512MiB (default: the model's default pool)");
  app.add_option("--kv-blocks", options.model.kv_num_blocks, "KV cache blocks (instead)")
      ->capture_default_str();
  app.add_option("--block-size", options.model.kv_block_size, "Tokens per KV block")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-num-seqs", options.scheduler.max_running_sequences,
                 "Most sequences in the running batch")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-num-batched-tokens", options.scheduler.max_batched_tokens,
                 "Most tokens per step (decodes plus prefill chunks)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--no-prefix-cache", no_prefix_cache, "Turn prefix caching off");
  app.add_flag("--no-chunked-prefill", no_chunked_prefill, "Prefill each prompt in one step");
  strata::bench::AddBenchFlags(app, flags);
  CLI11_PARSE(app, argc, argv);

  options.scheduler.enable_prefix_caching = !no_prefix_cache;
  options.scheduler.chunked_prefill = !no_chunked_prefill;
  if (!kv_cache_memory.empty()) {
    absl::StatusOr<uint64_t> bytes = strata::engine::ParseByteSize(kv_cache_memory);
    if (!bytes.ok()) {
      std::fprintf(stderr, "--kv-cache-memory: %s\n",
                   std::string(bytes.status().message()).c_str());
      return 2;
    }
    options.kv_cache_memory_bytes = *bytes;
  }
  if (!weight_dtype.empty()) {
    absl::StatusOr<strata::DType> dtype = strata::ParseDType(weight_dtype);
    if (!dtype.ok()) {
      std::fprintf(stderr, "--weight-dtype: %s\n", std::string(dtype.status().message()).c_str());
      return 2;
    }
    options.model.weight_dtype = *dtype;
  }
  absl::StatusOr<std::vector<strata::bench::RunSpec>> specs = strata::bench::MakeRunSpecs(flags);
  if (!specs.ok()) {
    std::fprintf(stderr, "strata-engine-bench: %s\n",
                 std::string(specs.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::unique_ptr<strata::engine::Engine>> engine =
      strata::engine::CreateEngine(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "strata-engine-bench: %s\n",
                 std::string(engine.status().message()).c_str());
    return 1;
  }
  const strata::model::ModelConfig& config = (*engine)->model_config();
  absl::StatusOr<strata::bench::Workload> workload =
      strata::bench::Workload::Create(flags.workload, config.vocab_size);
  if (!workload.ok()) {
    std::fprintf(stderr, "strata-engine-bench: %s\n",
                 std::string(workload.status().message()).c_str());
    return 2;
  }
  const strata::engine::EngineStats start = (*engine)->Stats();
  std::printf(
      "engine on %s: %d KV blocks of %d tokens, max %d seqs, %d tokens per step, "
      "prefix cache %s, chunked prefill %s\n",
      options.model.model_dir.c_str(), start.kv_blocks_total, options.model.kv_block_size,
      options.scheduler.max_running_sequences, options.scheduler.max_batched_tokens,
      no_prefix_cache ? "off" : "on", no_chunked_prefill ? "off" : "on");
  strata::bench::EngineTarget target(**engine, flags.temperature);
  const nlohmann::json extra = {{"engine",
                                 {{"model", options.model.model_dir},
                                  {"kv_blocks", start.kv_blocks_total},
                                  {"block_size", options.model.kv_block_size},
                                  {"max_num_seqs", options.scheduler.max_running_sequences},
                                  {"max_num_batched_tokens", options.scheduler.max_batched_tokens},
                                  {"prefix_cache", !no_prefix_cache},
                                  {"chunked_prefill", !no_chunked_prefill}}},
                                {"workload", strata::bench::WorkloadJson(flags)}};
  absl::Status status = strata::bench::RunSweep(target, *workload, *specs, flags, extra);
  const strata::engine::EngineStats end = (*engine)->Stats();
  std::printf(
      "engine: %llu steps, %llu preemptions, prefix cache hits %llu of %llu tokens\n",
      static_cast<unsigned long long>(end.steps - start.steps),
      static_cast<unsigned long long>(end.preemptions - start.preemptions),
      static_cast<unsigned long long>(end.prefix_cache_hits - start.prefix_cache_hits),
      static_cast<unsigned long long>(end.prefix_cache_queries - start.prefix_cache_queries));
  (*engine)->Shutdown();
  if (!status.ok()) {
    std::fprintf(stderr, "strata-engine-bench: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

// The model: weights of one shard plus a forward pass over a ForwardBatch,
// written once against the Backend interface (worker/backend/backend.h).
//
// Thread-safety: Forward() is called by one thread at a time (the engine's
// step thread); the config is immutable.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/forward_batch.h"
#include "worker/model/model_config.h"
#include "worker/model/model_shard.h"

namespace strata::model {

struct LoadOptions {
  std::string model_dir;  // HF folder: config.json, *.safetensors, tokenizer files
  // Build the architecture from config.json alone with seeded random weights,
  // reading no safetensors (benchmarks on large shapes).
  bool random_weights = false;
  uint64_t random_seed = 0;
  // dtype the weight matrices are kept in. Unset: as stored in the file, and
  // BF16 for random weights. File weights in another dtype are converted.
  std::optional<DType> weight_dtype;
  // Number of KV cache blocks and tokens per block.
  int32_t kv_block_size = 16;
  // 0: enough for max_position_embeddings * 4 tokens, capped at 8 GiB of cache.
  int32_t kv_num_blocks = 0;
  // Which backend runs the forward pass: "cpu" (CpuBackend), "cuda"
  // (CudaBackend on cuda_device; the build must include the CUDA backend), or
  // "auto" (cuda when the build has it and a device is visible, else cpu).
  std::string device = "cpu";
  int32_t cuda_device = 0;
  // CUDA: replay repeated steps (decode at a given batch size) as CUDA graphs.
  bool cuda_graphs = true;
  int32_t num_threads = 0;  // CPU threads for kernels; 0: all cores
  // CPU backend: run the AVX-512 kernels when the CPU has them (false forces
  // the AVX2 ones, for comparison).
  bool use_avx512 = true;
  // The part of the model this process holds (unset: all of it) and the
  // communicators its forward pass uses (see model_shard.h). KV cache sizes
  // (kv_num_blocks) then count this shard's layers and KV heads only.
  std::optional<ModelShard> shard;
  ShardLinks links;
};

// Where a model's Forward time went, summed since load (or the last reset):
// the whole calls, and within them the TP collectives (all-reduces, logits
// all-gather; includes waiting for the slowest TP peer), receiving
// activations from the previous pipeline stage (mostly waiting for it) and
// sending them on. Compute is the rest.
struct ForwardTimings {
  double forward_seconds = 0;
  double tp_collective_seconds = 0;
  double pp_receive_seconds = 0;
  double pp_send_seconds = 0;
  uint64_t steps = 0;

  double compute_seconds() const {
    return forward_seconds - tp_collective_seconds - pp_receive_seconds - pp_send_seconds;
  }
};

class Model {
 public:
  virtual ~Model() = default;

  // Loads config and weights (memory-mapped, validated against the config) and
  // allocates the KV cache. Errors name the file and the problem in one line.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const LoadOptions& options);

  virtual const ModelConfig& config() const = 0;
  virtual int32_t kv_block_size() const = 0;
  virtual int32_t kv_num_blocks() const = 0;
  // Bytes of all weights as held in memory (norms and biases count as F32).
  virtual uint64_t weight_bytes() const = 0;
  // Bytes of weights one decode step reads: every layer's matrices and
  // vectors, the final norm and the LM head (one embedding row is not counted).
  virtual uint64_t decode_read_bytes() const = 0;
  // dtype of the weight matrices.
  virtual DType weight_dtype() const = 0;

  // Runs one step: appends K/V of the batch's tokens to the cache and writes
  // logits [batch.NumLogitRows(), vocab_size] (row-major, F32) for the last
  // token of each sequence that wants logits. A shard that is not the last
  // pipeline stage hands its activations to the next stage and leaves
  // `logits` empty.
  virtual absl::Status Forward(const ForwardBatch& batch, std::vector<float>& logits) = 0;

  // This process's share of the work (its shard). Safe to call from any
  // thread. Models that do not measure return zeros.
  virtual ForwardTimings timings() const { return {}; }

  // Pipelining: a model that returns n > 1 here accepts up to n batches at
  // once over disjoint sequences: StartForward launches one, FinishForward
  // returns the logits of the oldest unfinished one (in launch order). Others
  // run one batch at a time through Forward and need not implement these.
  virtual int32_t max_batches_in_flight() const { return 1; }
  virtual absl::Status StartForward(const ForwardBatch& /*batch*/) {
    return absl::UnimplementedError("this model runs one batch at a time (Forward)");
  }
  virtual absl::Status FinishForward(std::vector<float>& /*logits*/) {
    return absl::UnimplementedError("this model runs one batch at a time (Forward)");
  }
};

}  // namespace strata::model

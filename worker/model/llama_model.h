// The Llama-family forward pass (Llama 2/3/3.1, Mistral, Qwen2: the same
// structure, with q/k/v bias for Qwen2), written once against the Backend
// interface, over a ForwardBatch mixing prefill chunks and decode tokens of
// several sequences, with a paged F32 KV cache.
//
// Per layer, on activations x [n, hidden]:
//   h = RmsNorm(x); q, k, v = h·Wq^T, h·Wk^T, h·Wv^T (+bias); RoPE(q, k);
//   append k, v to the cache; a = PagedAttention(q); x += a·Wo^T;
//   h = RmsNorm(x); x += (silu(h·Wg^T) * h·Wu^T)·Wd^T
// then logits = RmsNorm(x[last token of each sequence])·W_lm^T.
//
// A shard (LoadOptions::shard) runs only its stage's layers on its slices of
// the weights: the first stage embeds (vocabulary-parallel: each TP rank looks
// up the ids it holds, then one all-reduce), later stages receive the
// residual stream from the previous stage; o and down give partial sums,
// all-reduced over the TP group; a stage that is not the last sends its
// residual stream on and returns no logits; the last stage's TP ranks each
// compute their vocabulary slice of the logits and all-gather them.
//
// Thread-safety: as Model (Forward from one thread at a time).
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "worker/backend/backend.h"
#include "worker/backend/host_buffer.h"
#include "worker/model/llama_weights.h"
#include "worker/model/model.h"
#include "worker/model/model_shard.h"
#include "worker/model/safetensors.h"

namespace strata::model {

class LlamaModel final : public Model {
 public:
  // REQUIRES: config is one of the supported architectures (FromJson checked).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(
      const ModelConfig& config, const LoadOptions& options,
      std::unique_ptr<backend::Backend> backend);

  const ModelConfig& config() const override { return config_; }
  int32_t kv_block_size() const override { return block_size_; }
  int32_t kv_num_blocks() const override { return num_blocks_; }
  uint64_t weight_bytes() const override { return weight_bytes_; }
  uint64_t decode_read_bytes() const override { return decode_read_bytes_; }
  DType weight_dtype() const override { return weight_dtype_; }

  absl::Status Forward(const ForwardBatch& batch, std::vector<float>& logits) override;

  backend::Backend& backend() { return *backend_; }
  const ModelShard& shard() const { return shard_; }

  ForwardTimings timings() const override;
  // Starts the sums of timings() again (benchmarks measure phases).
  void ResetTimings();

 private:
  struct Layer {
    backend::Weight q, k, v, o, gate, up, down;
    const float* input_norm = nullptr;  // device [hidden]
    const float* post_norm = nullptr;   // device [hidden]
    const float* q_bias = nullptr;      // device [q_dim] or nullptr
    const float* k_bias = nullptr;
    const float* v_bias = nullptr;
    backend::KvCacheLayer kv;
  };

  // A slice of one tensor before import: a view of the file mapping or of a
  // random-weights buffer. rows x cols elements, rows row_stride apart
  // (vectors: one row).
  struct HostTensor {
    const void* data = nullptr;
    DType dtype = DType::kF32;
    int64_t rows = 0;
    int64_t cols = 0;
    int64_t row_stride = 0;

    bool contiguous() const { return rows <= 1 || row_stride == cols; }
  };

  LlamaModel(const ModelConfig& config, const ModelShard& shard, const ShardLinks& links,
             std::unique_ptr<backend::Backend> backend)
      : config_(config), shard_(shard), links_(links), backend_(std::move(backend)) {}

  absl::Status LoadWeights(const LoadOptions& options);
  absl::Status ImportCheckpointSlices(const LoadOptions& options,
                                      const std::vector<ShardTensor>& needed,
                                      const std::vector<const TensorView*>& views);
  static HostTensor Slice(const void* data, DType dtype, const std::vector<int64_t>& shape,
                          const ShardTensor& t);
  static uint64_t SliceBytes(const TensorSpec& spec, const ShardTensor& t, DType matrix_dtype);
  void TouchSlice(const HostTensor& slice);
  // Stores a slice where `name` belongs. view_allowed: a contiguous matrix in
  // the right dtype may stay a view of its source (which must then outlive
  // the model); otherwise it is copied.
  absl::Status ImportTensor(const std::string& name, const HostTensor& slice, DType matrix_dtype,
                            bool view_allowed);
  absl::StatusOr<backend::Weight> ImportMatrix(const HostTensor& tensor, DType dtype,
                                               bool view_allowed);
  absl::StatusOr<const float*> ImportVector(const HostTensor& tensor);
  absl::Status FinishImport();
  absl::Status AllocateCache(const LoadOptions& options);
  absl::Status ValidateBatch(const ForwardBatch& batch) const;
  absl::Status ReserveStep(int32_t num_tokens, int32_t num_sequences, size_t table_entries);
  // Last stage: logits of `rows` rows from this rank's vocabulary slice,
  // gathered over the TP group into logits [rows, vocab_size].
  absl::Status GatherLogits(int32_t rows, std::vector<float>& logits);

  const ModelConfig config_;
  const ModelShard shard_;
  const ShardLinks links_;
  std::unique_ptr<backend::Backend> backend_;
  DType weight_dtype_ = DType::kF32;
  uint64_t weight_bytes_ = 0;
  uint64_t decode_read_bytes_ = 0;
  uint64_t layer_bytes_ = 0;   // layer matrices, as imported
  uint64_t vector_bytes_ = 0;  // norms and biases, as F32
  uint64_t touch_checksum_ = 0;

  // Timings, in nanoseconds.
  std::atomic<int64_t> forward_ns_{0};
  std::atomic<int64_t> tp_collective_ns_{0};
  std::atomic<int64_t> pp_receive_ns_{0};
  std::atomic<int64_t> pp_send_ns_{0};
  std::atomic<uint64_t> steps_{0};

  // Keep the sources of zero-copy weights alive.
  std::unique_ptr<Checkpoint> checkpoint_;
  std::vector<std::unique_ptr<backend::HostBuffer>> host_storage_;
  std::vector<std::unique_ptr<backend::DeviceBuffer>> device_storage_;

  // Vocabulary slices: embed_ on the first stage (and the last when tied),
  // the LM head on the last stage.
  backend::Weight embed_;
  backend::Weight lm_head_storage_;           // used only when not tied
  const backend::Weight* lm_head_ = nullptr;  // &embed_ or &lm_head_storage_; last stage only
  const float* final_norm_ = nullptr;
  std::vector<Layer> layers_;
  backend::AttentionParams attention_;

  // KV cache and RoPE tables.
  int32_t block_size_ = 0;
  int32_t num_blocks_ = 0;
  int32_t max_positions_ = 0;  // positions the RoPE table covers
  std::unique_ptr<backend::DeviceBuffer> kv_cache_;
  std::unique_ptr<backend::DeviceBuffer> rope_cos_;
  std::unique_ptr<backend::DeviceBuffer> rope_sin_;

  // Step buffers, grown on demand.
  int32_t token_capacity_ = 0;
  int32_t sequence_capacity_ = 0;
  size_t table_capacity_ = 0;
  std::unique_ptr<backend::DeviceBuffer> x_, h_, q_, k_, v_, attn_, delta_, gate_, up_;
  std::unique_ptr<backend::DeviceBuffer> token_ids_, positions_, slots_, sequences_, tables_;
  std::unique_ptr<backend::DeviceBuffer> logit_rows_, last_x_, last_delta_, last_h_, logits_;
  // Host staging for the step metadata.
  std::vector<int32_t> slots_host_;
  std::vector<backend::AttentionSequence> sequences_host_;
  std::vector<int32_t> tables_host_;
  std::vector<int32_t> logit_rows_host_;
  std::vector<float> local_logits_host_;     // [rows, max vocab slice], padded
  std::vector<float> gathered_logits_host_;  // [tp, rows, max vocab slice]
};

}  // namespace strata::model

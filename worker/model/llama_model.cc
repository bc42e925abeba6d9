#include "worker/model/llama_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/process_memory.h"
#include "common/progress.h"
#include "common/status_macros.h"
#include "parallel/communicator_groups.h"
#include "spdlog/spdlog.h"
#include "worker/backend/convert.h"
#include "worker/backend/rope_table.h"
#include "worker/model/llama_weights.h"
#include "worker/model/random_weights.h"

namespace strata::model {
namespace {

constexpr float kRandomStddev = 0.02f;

// Through F32 in blocks, with the backend's vectorised conversions (which
// round as F32ToBf16 / F32ToF16 do).
void ConvertElements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t count) {
  constexpr int64_t kBlock = 4096;
  std::vector<float> block(kBlock);
  const auto* s = static_cast<const std::byte*>(src);
  auto* d = static_cast<std::byte*>(dst);
  for (int64_t i = 0; i < count; i += kBlock) {
    const int64_t n = std::min(kBlock, count - i);
    backend::WidenToF32(s + i * DTypeSize(src_dtype), src_dtype, n, block.data());
    backend::NarrowFromF32(block.data(), n, dst_dtype, d + i * DTypeSize(dst_dtype));
  }
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Reads one byte per page so that a zero-copy weight is resident before the
// first request, not faulted in during it.
// Adds the time from construction to destruction to `total` (nanoseconds).
class ScopedTimer {
 public:
  explicit ScopedTimer(std::atomic<int64_t>& total)
      : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~ScopedTimer() {
    total_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now() - start_)
                         .count(),
                     std::memory_order_relaxed);
  }

 private:
  std::atomic<int64_t>& total_;
  const std::chrono::steady_clock::time_point start_;
};

uint64_t TouchPages(const void* data, size_t bytes) {
  const auto* p = static_cast<const volatile uint8_t*>(data);
  uint64_t sum = 0;
  for (size_t i = 0; i < bytes; i += 4096) sum += p[i];
  return sum;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(
    const ModelConfig& config, const LoadOptions& options,
    std::unique_ptr<backend::Backend> backend) {
  const ModelShard shard = options.shard.value_or(ModelShard::Whole(config));
  if (shard.tp > 1 && options.links.tensor_parallel == nullptr) {
    return absl::InvalidArgumentError("a tensor-parallel shard needs its TP communicator");
  }
  if ((!shard.first_stage() && options.links.previous_stage == nullptr) ||
      (!shard.last_stage() && options.links.next_stage == nullptr)) {
    return absl::InvalidArgumentError("a pipeline stage needs links to its neighbouring stages");
  }
  std::unique_ptr<LlamaModel> model(
      new LlamaModel(config, shard, options.links, std::move(backend)));
  model->attention_.num_heads = static_cast<int32_t>(shard.tensor.attention_heads.size());
  model->attention_.num_kv_heads = static_cast<int32_t>(shard.tensor.kv_heads.size());
  model->attention_.head_dim = config.head_dim;
  model->attention_.scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
  STRATA_RETURN_IF_ERROR(model->LoadWeights(options));
  STRATA_RETURN_IF_ERROR(model->AllocateCache(options));
  return model;
}

absl::Status LlamaModel::LoadWeights(const LoadOptions& options) {
  const std::vector<TensorSpec> specs = LlamaTensorSpecs(config_);
  std::vector<ShardTensor> needed = LlamaShardTensors(config_, specs, shard_);
  if (options.random_weights) {
    // Every tensor is drawn whole from (seed, its index in the full list), so
    // that each shard holds exactly its slice of the single-process weights.
    const DType dtype = options.weight_dtype.value_or(DType::kBF16);
    weight_dtype_ = dtype;
    uint64_t total_bytes = 0;
    for (const ShardTensor& t : needed) total_bytes += SliceBytes(specs[t.spec_index], t, dtype);
    Progress progress("generating random weights", total_bytes);
    for (const ShardTensor& t : needed) {
      const TensorSpec& spec = specs[t.spec_index];
      const bool matrix = spec.shape.size() == 2;
      const DType tensor_dtype = matrix ? dtype : DType::kF32;
      const int64_t count = Elements(spec.shape);
      STRATA_ASSIGN_OR_RETURN(
          auto buffer,
          backend::HostBuffer::Allocate(static_cast<size_t>(count) * DTypeSize(tensor_dtype)));
      const bool norm = spec.name.find("norm") != std::string::npos;
      FillRandom(buffer->data(), tensor_dtype, count, norm ? 1.0f : 0.0f, kRandomStddev,
                 options.random_seed, t.spec_index, options.num_threads);
      const HostTensor slice = Slice(buffer->data(), tensor_dtype, spec.shape, t);
      // A whole matrix is imported as a view of the buffer, which then lives
      // on; a slice is copied so that the rest of the buffer can go.
      const bool whole = t.rows.size() == spec.shape[0] && slice.contiguous();
      STRATA_RETURN_IF_ERROR(ImportTensor(spec.name, slice, dtype, /*view_allowed=*/whole));
      if (whole && matrix) host_storage_.push_back(std::move(buffer));
      progress.Advance(SliceBytes(spec, t, dtype));
    }
  } else {
    STRATA_ASSIGN_OR_RETURN(checkpoint_, Checkpoint::Open(options.model_dir));
    // An untied model without lm_head.weight projects with the embedding.
    for (size_t i = 0; i < needed.size(); ++i) {
      const TensorSpec& spec = specs[needed[i].spec_index];
      if (!spec.optional || checkpoint_->Find(spec.name) != nullptr) continue;
      spdlog::warn("no {}: using model.embed_tokens.weight as the output projection", spec.name);
      const ShardTensor embed{/*spec_index=*/0, needed[i].rows, needed[i].cols};
      needed.erase(needed.begin() + static_cast<std::ptrdiff_t>(i));
      if (needed.empty() || needed.front().spec_index != 0) needed.insert(needed.begin(), embed);
      break;
    }
    std::vector<const TensorView*> views;
    for (const ShardTensor& t : needed) {
      const TensorSpec& spec = specs[t.spec_index];
      const TensorView* tensor = checkpoint_->Find(spec.name);
      if (tensor == nullptr) {
        return absl::NotFoundError(absl::StrCat(checkpoint_->description(), ": missing tensor '",
                                                spec.name, "' (shape ", ShapeString(spec.shape),
                                                " from config.json)"));
      }
      if (tensor->shape != spec.shape) {
        return absl::InvalidArgumentError(absl::StrCat(
            *tensor->file, ": tensor '", spec.name, "' has shape ", ShapeString(tensor->shape),
            ", expected ", ShapeString(spec.shape), " from config.json"));
      }
      views.push_back(tensor);
    }
    STRATA_RETURN_IF_ERROR(ImportCheckpointSlices(options, needed, views));
  }
  return FinishImport();
}

absl::Status LlamaModel::ImportCheckpointSlices(const LoadOptions& options,
                                                const std::vector<ShardTensor>& needed,
                                                const std::vector<const TensorView*>& views) {
  const std::vector<TensorSpec> specs = LlamaTensorSpecs(config_);
  // The matrices keep the file's dtype unless told otherwise.
  const TensorView* embedding = checkpoint_->Find("model.embed_tokens.weight");
  const DType dtype =
      options.weight_dtype.value_or(embedding != nullptr ? embedding->dtype : views.front()->dtype);
  weight_dtype_ = dtype;
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < needed.size(); ++i) {
    total_bytes += SliceBytes(specs[needed[i].spec_index], needed[i], views[i]->dtype);
  }
  Progress progress("loading weights", total_bytes);
  for (size_t i = 0; i < needed.size(); ++i) {
    const TensorView& view = *views[i];
    const HostTensor slice = Slice(view.data, view.dtype, view.shape, needed[i]);
    // Only the slice's pages are read, so a rank's resident memory is its
    // share of the weights.
    TouchSlice(slice);
    STRATA_RETURN_IF_ERROR(ImportTensor(view.name, slice, dtype, /*view_allowed=*/true));
    progress.Advance(SliceBytes(specs[needed[i].spec_index], needed[i], view.dtype));
  }
  return absl::OkStatus();
}

LlamaModel::HostTensor LlamaModel::Slice(const void* data, DType dtype,
                                         const std::vector<int64_t>& shape, const ShardTensor& t) {
  HostTensor slice;
  slice.dtype = dtype;
  const size_t element = DTypeSize(dtype);
  if (shape.size() == 2) {
    slice.rows = t.rows.size();
    slice.cols = t.cols.size();
    slice.row_stride = shape[1];
    slice.data = static_cast<const std::byte*>(data) +
                 (t.rows.begin * shape[1] + t.cols.begin) * static_cast<int64_t>(element);
  } else {
    slice.rows = 1;
    slice.cols = t.rows.size();
    slice.row_stride = slice.cols;
    slice.data = static_cast<const std::byte*>(data) + t.rows.begin * static_cast<int64_t>(element);
  }
  return slice;
}

uint64_t LlamaModel::SliceBytes(const TensorSpec& spec, const ShardTensor& t, DType matrix_dtype) {
  const bool matrix = spec.shape.size() == 2;
  return static_cast<uint64_t>(t.rows.size()) * (matrix ? t.cols.size() : 1) *
         (matrix ? DTypeSize(matrix_dtype) : sizeof(float));
}

void LlamaModel::TouchSlice(const HostTensor& slice) {
  const size_t element = DTypeSize(slice.dtype);
  const auto* base = static_cast<const std::byte*>(slice.data);
  uint64_t checksum = 0;
  for (int64_t r = 0; r < slice.rows; ++r) {
    checksum += TouchPages(base + r * slice.row_stride * element, slice.cols * element);
  }
  touch_checksum_ += checksum;
}

absl::StatusOr<backend::Weight> LlamaModel::ImportMatrix(const HostTensor& tensor, DType dtype,
                                                         bool view_allowed) {
  if (view_allowed && tensor.dtype == dtype && tensor.contiguous()) {
    return backend_->ImportWeight(tensor.data, dtype, tensor.rows, tensor.cols);
  }
  // A column slice or another dtype: copy the slice, row by row.
  STRATA_ASSIGN_OR_RETURN(
      auto converted, backend::HostBuffer::Allocate(static_cast<size_t>(tensor.rows) * tensor.cols *
                                                    DTypeSize(dtype)));
  const size_t src_element = DTypeSize(tensor.dtype);
  for (int64_t r = 0; r < tensor.rows; ++r) {
    ConvertElements(
        static_cast<const std::byte*>(tensor.data) + r * tensor.row_stride * src_element,
        tensor.dtype,
        static_cast<std::byte*>(converted->data()) + r * tensor.cols * DTypeSize(dtype), dtype,
        tensor.cols);
  }
  auto weight = backend_->ImportWeight(converted->data(), dtype, tensor.rows, tensor.cols);
  host_storage_.push_back(std::move(converted));
  return weight;
}

absl::StatusOr<const float*> LlamaModel::ImportVector(const HostTensor& tensor) {
  const int64_t count = tensor.cols;
  std::vector<float> values(count);
  ConvertElements(tensor.data, tensor.dtype, values.data(), DType::kF32, count);
  STRATA_ASSIGN_OR_RETURN(auto buffer, backend_->Allocate(values.size() * sizeof(float)));
  backend_->CopyToDevice(buffer->data(), values.data(), values.size() * sizeof(float));
  const float* device = buffer->f32();
  device_storage_.push_back(std::move(buffer));
  vector_bytes_ += static_cast<uint64_t>(count) * sizeof(float);
  return device;
}

absl::Status LlamaModel::ImportTensor(const std::string& name, const HostTensor& slice,
                                      DType matrix_dtype, bool view_allowed) {
  if (name == "model.embed_tokens.weight") {
    STRATA_ASSIGN_OR_RETURN(embed_, ImportMatrix(slice, matrix_dtype, view_allowed));
    return absl::OkStatus();
  }
  if (name == "lm_head.weight") {
    STRATA_ASSIGN_OR_RETURN(lm_head_storage_, ImportMatrix(slice, matrix_dtype, view_allowed));
    lm_head_ = &lm_head_storage_;
    return absl::OkStatus();
  }
  if (name == "model.norm.weight") {
    STRATA_ASSIGN_OR_RETURN(final_norm_, ImportVector(slice));
    return absl::OkStatus();
  }
  // "model.layers.<l>.<suffix>"
  const size_t dot = name.find('.', sizeof("model.layers.") - 1);
  const int l = std::stoi(name.substr(sizeof("model.layers.") - 1));
  const std::string suffix = name.substr(dot + 1);
  if (layers_.empty()) layers_.resize(shard_.layers.size());
  Layer& layer = layers_.at(l - shard_.layers.begin);
  const absl::flat_hash_map<std::string, backend::Weight*> matrices = {
      {"self_attn.q_proj.weight", &layer.q}, {"self_attn.k_proj.weight", &layer.k},
      {"self_attn.v_proj.weight", &layer.v}, {"self_attn.o_proj.weight", &layer.o},
      {"mlp.gate_proj.weight", &layer.gate}, {"mlp.up_proj.weight", &layer.up},
      {"mlp.down_proj.weight", &layer.down}};
  const absl::flat_hash_map<std::string, const float**> vectors = {
      {"input_layernorm.weight", &layer.input_norm},
      {"post_attention_layernorm.weight", &layer.post_norm},
      {"self_attn.q_proj.bias", &layer.q_bias},
      {"self_attn.k_proj.bias", &layer.k_bias},
      {"self_attn.v_proj.bias", &layer.v_bias}};
  if (auto it = matrices.find(suffix); it != matrices.end()) {
    STRATA_ASSIGN_OR_RETURN(*it->second, ImportMatrix(slice, matrix_dtype, view_allowed));
    layer_bytes_ += it->second->bytes();
    return absl::OkStatus();
  }
  if (auto it = vectors.find(suffix); it != vectors.end()) {
    STRATA_ASSIGN_OR_RETURN(*it->second, ImportVector(slice));
    return absl::OkStatus();
  }
  return absl::InternalError(absl::StrCat("no slot for tensor ", name));
}

absl::Status LlamaModel::FinishImport() {
  spdlog::debug("weights paged in (checksum {})", touch_checksum_);
  if (layers_.empty()) layers_.resize(shard_.layers.size());
  if (shard_.last_stage() && lm_head_ == nullptr) lm_head_ = &embed_;
  const bool holds_embedding = embed_.data != nullptr;
  const bool separate_head = lm_head_ != nullptr && lm_head_ != &embed_;
  weight_bytes_ = (holds_embedding ? embed_.bytes() : 0) + layer_bytes_ + vector_bytes_ +
                  (separate_head ? lm_head_->bytes() : 0);
  decode_read_bytes_ = layer_bytes_ + vector_bytes_ + (lm_head_ != nullptr ? lm_head_->bytes() : 0);
  return absl::OkStatus();
}

absl::Status LlamaModel::AllocateCache(const LoadOptions& options) {
  if (options.kv_block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_block_size must be positive, got ", options.kv_block_size));
  }
  if (options.kv_num_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_num_blocks must be >= 0, got ", options.kv_num_blocks));
  }
  block_size_ = options.kv_block_size;
  const uint64_t token_bytes = KvBytesPerToken(config_, shard_);
  if (options.kv_num_blocks > 0) {
    num_blocks_ = options.kv_num_blocks;
  } else {
    num_blocks_ = DefaultKvBlocks(config_, shard_, block_size_);
    const uint64_t tokens = static_cast<uint64_t>(num_blocks_) * block_size_;
    if (tokens < static_cast<uint64_t>(config_.max_position_embeddings) * 4) {
      spdlog::warn("KV cache capped at {} tokens ({})", tokens, HumanBytes(tokens * token_bytes));
    }
  }
  attention_.block_size = block_size_;
  const int64_t local_layers = shard_.layers.size();
  const uint64_t layer_floats =
      static_cast<uint64_t>(num_blocks_) * block_size_ * attention_.num_kv_heads * config_.head_dim;
  STRATA_ASSIGN_OR_RETURN(kv_cache_,
                          backend_->Allocate(layer_floats * 2 * sizeof(float) * local_layers));
  for (int64_t l = 0; l < local_layers; ++l) {
    layers_[l].kv.key = kv_cache_->f32() + (2 * l) * layer_floats;
    layers_[l].kv.value = kv_cache_->f32() + (2 * l + 1) * layer_floats;
  }

  // No sequence can hold more positions than the cache or the model allows.
  max_positions_ = static_cast<int32_t>(std::min<int64_t>(
      config_.max_position_embeddings, static_cast<int64_t>(num_blocks_) * block_size_));
  backend::RopeParams rope;
  rope.head_dim = config_.head_dim;
  rope.theta = config_.rope_theta;
  if (config_.rope_scaling.has_value()) {
    rope.llama3_scaling = true;
    rope.factor = config_.rope_scaling->factor;
    rope.low_freq_factor = config_.rope_scaling->low_freq_factor;
    rope.high_freq_factor = config_.rope_scaling->high_freq_factor;
    rope.original_max_position_embeddings = config_.rope_scaling->original_max_position_embeddings;
  }
  const backend::RopeTable table = backend::BuildRopeTable(rope, max_positions_);
  const size_t table_bytes = table.cos.size() * sizeof(float);
  STRATA_ASSIGN_OR_RETURN(rope_cos_, backend_->Allocate(table_bytes));
  STRATA_ASSIGN_OR_RETURN(rope_sin_, backend_->Allocate(table_bytes));
  backend_->CopyToDevice(rope_cos_->data(), table.cos.data(), table_bytes);
  backend_->CopyToDevice(rope_sin_->data(), table.sin.data(), table_bytes);
  return absl::OkStatus();
}

absl::Status LlamaModel::ValidateBatch(const ForwardBatch& batch) const {
  const int32_t n = batch.num_tokens();
  if (n == 0 || batch.sequences.empty()) {
    return absl::InvalidArgumentError("ForwardBatch: no tokens or no sequences");
  }
  if (batch.positions.size() != batch.token_ids.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardBatch: ", batch.positions.size(), " positions for ", n, " tokens"));
  }
  for (int32_t i = 0; i < n; ++i) {
    if (batch.token_ids[i] < 0 || batch.token_ids[i] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: token id ", batch.token_ids[i],
                                                     " outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
  }
  int32_t next_token = 0;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const BatchSequence& seq = batch.sequences[s];
    const std::string where = absl::StrCat("ForwardBatch: sequence ", s, ": ");
    if (seq.first_token != next_token || seq.num_tokens < 1 ||
        seq.num_tokens > n - seq.first_token) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "tokens [", seq.first_token, ", +", seq.num_tokens,
                       ") do not follow the previous sequence within the batch's ", n, " tokens"));
    }
    next_token += seq.num_tokens;
    if (seq.context_len < seq.num_tokens || seq.context_len > max_positions_) {
      return absl::InvalidArgumentError(absl::StrCat(where, "context_len ", seq.context_len,
                                                     " outside [", seq.num_tokens, ", ",
                                                     max_positions_, "]"));
    }
    const int32_t first_position = seq.context_len - seq.num_tokens;
    for (int32_t i = 0; i < seq.num_tokens; ++i) {
      if (batch.positions[seq.first_token + i] != first_position + i) {
        return absl::InvalidArgumentError(absl::StrCat(where, "token ", i, " has position ",
                                                       batch.positions[seq.first_token + i],
                                                       ", expected ", first_position + i));
      }
    }
    const size_t blocks_needed = (seq.context_len + block_size_ - 1) / block_size_;
    if (seq.block_table.size() < blocks_needed) {
      return absl::InvalidArgumentError(absl::StrCat(where, "block table has ",
                                                     seq.block_table.size(), " blocks, ",
                                                     blocks_needed, " needed"));
    }
    for (size_t b = 0; b < blocks_needed; ++b) {
      if (seq.block_table[b] < 0 || seq.block_table[b] >= num_blocks_) {
        return absl::InvalidArgumentError(absl::StrCat(where, "block id ", seq.block_table[b],
                                                       " outside [0, ", num_blocks_, ")"));
      }
    }
  }
  if (next_token != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardBatch: sequences cover ", next_token, " of ", n, " tokens"));
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::ReserveStep(int32_t num_tokens, int32_t num_sequences,
                                     size_t table_entries) {
  auto reserve = [&](std::unique_ptr<backend::DeviceBuffer>& buffer, size_t bytes) -> absl::Status {
    if (buffer != nullptr && buffer->size_bytes() >= bytes) return absl::OkStatus();
    STRATA_ASSIGN_OR_RETURN(buffer, backend_->Allocate(bytes));
    return absl::OkStatus();
  };
  const size_t f = sizeof(float);
  if (num_tokens > token_capacity_) {
    // Grow geometrically so a run of growing prefill chunks reallocates rarely.
    const size_t t = std::max<size_t>(num_tokens, token_capacity_ * 3 / 2);
    const size_t hidden = config_.hidden_size;
    const size_t q_dim = static_cast<size_t>(attention_.num_heads) * config_.head_dim;
    const size_t kv_dim = static_cast<size_t>(attention_.num_kv_heads) * config_.head_dim;
    const size_t inter = shard_.tensor.intermediate.size();
    STRATA_RETURN_IF_ERROR(reserve(x_, t * hidden * f));
    STRATA_RETURN_IF_ERROR(reserve(h_, t * hidden * f));
    STRATA_RETURN_IF_ERROR(reserve(delta_, t * hidden * f));
    STRATA_RETURN_IF_ERROR(reserve(q_, t * q_dim * f));
    STRATA_RETURN_IF_ERROR(reserve(attn_, t * q_dim * f));
    STRATA_RETURN_IF_ERROR(reserve(k_, t * kv_dim * f));
    STRATA_RETURN_IF_ERROR(reserve(v_, t * kv_dim * f));
    STRATA_RETURN_IF_ERROR(reserve(gate_, t * inter * f));
    STRATA_RETURN_IF_ERROR(reserve(up_, t * inter * f));
    STRATA_RETURN_IF_ERROR(reserve(token_ids_, t * sizeof(int32_t)));
    STRATA_RETURN_IF_ERROR(reserve(positions_, t * sizeof(int32_t)));
    STRATA_RETURN_IF_ERROR(reserve(slots_, t * sizeof(int32_t)));
    token_capacity_ = static_cast<int32_t>(t);
  }
  if (num_sequences > sequence_capacity_) {
    const size_t s = std::max<size_t>(num_sequences, sequence_capacity_ * 3 / 2);
    STRATA_RETURN_IF_ERROR(reserve(sequences_, s * sizeof(backend::AttentionSequence)));
    STRATA_RETURN_IF_ERROR(reserve(logit_rows_, s * sizeof(int32_t)));
    STRATA_RETURN_IF_ERROR(reserve(last_x_, s * config_.hidden_size * f));
    STRATA_RETURN_IF_ERROR(reserve(last_delta_, s * config_.hidden_size * f));
    STRATA_RETURN_IF_ERROR(reserve(last_h_, s * config_.hidden_size * f));
    STRATA_RETURN_IF_ERROR(
        reserve(logits_, s * static_cast<size_t>(shard_.tensor.vocab.size()) * f));
    sequence_capacity_ = static_cast<int32_t>(s);
  }
  if (table_entries > table_capacity_) {
    const size_t e = std::max(table_entries, table_capacity_ * 3 / 2);
    STRATA_RETURN_IF_ERROR(reserve(tables_, e * sizeof(int32_t)));
    table_capacity_ = e;
  }
  return absl::OkStatus();
}

ForwardTimings LlamaModel::timings() const {
  ForwardTimings t;
  t.forward_seconds = forward_ns_.load() * 1e-9;
  t.tp_collective_seconds = tp_collective_ns_.load() * 1e-9;
  t.pp_receive_seconds = pp_receive_ns_.load() * 1e-9;
  t.pp_send_seconds = pp_send_ns_.load() * 1e-9;
  t.steps = steps_.load();
  return t;
}

void LlamaModel::ResetTimings() {
  forward_ns_ = 0;
  tp_collective_ns_ = 0;
  pp_receive_ns_ = 0;
  pp_send_ns_ = 0;
  steps_ = 0;
}

absl::Status LlamaModel::Forward(const ForwardBatch& batch, std::vector<float>& logits) {
  ScopedTimer forward_timer(forward_ns_);
  steps_.fetch_add(1, std::memory_order_relaxed);
  STRATA_RETURN_IF_ERROR(ValidateBatch(batch));
  const int32_t n = batch.num_tokens();
  const auto num_sequences = static_cast<int32_t>(batch.sequences.size());

  // Host-side step metadata: cache slots, sequence descriptors, flattened
  // block tables, and the rows whose logits are wanted.
  slots_host_.resize(n);
  sequences_host_.resize(num_sequences);
  tables_host_.clear();
  logit_rows_host_.clear();
  int32_t max_context = 0;
  for (int32_t s = 0; s < num_sequences; ++s) {
    const BatchSequence& seq = batch.sequences[s];
    const int32_t blocks = (seq.context_len + block_size_ - 1) / block_size_;
    sequences_host_[s] = {seq.first_token, seq.num_tokens, seq.context_len,
                          static_cast<int32_t>(tables_host_.size())};
    tables_host_.insert(tables_host_.end(), seq.block_table.begin(),
                        seq.block_table.begin() + blocks);
    for (int32_t i = 0; i < seq.num_tokens; ++i) {
      const int32_t position = batch.positions[seq.first_token + i];
      slots_host_[seq.first_token + i] =
          seq.block_table[position / block_size_] * block_size_ + position % block_size_;
    }
    if (seq.wants_logits) logit_rows_host_.push_back(seq.first_token + seq.num_tokens - 1);
    max_context = std::max(max_context, seq.context_len);
  }
  STRATA_RETURN_IF_ERROR(ReserveStep(n, num_sequences, tables_host_.size()));
  backend::Backend& be = *backend_;
  be.CopyToDevice(token_ids_->data(), batch.token_ids.data(), n * sizeof(int32_t));
  be.CopyToDevice(positions_->data(), batch.positions.data(), n * sizeof(int32_t));
  be.CopyToDevice(slots_->data(), slots_host_.data(), n * sizeof(int32_t));
  be.CopyToDevice(sequences_->data(), sequences_host_.data(),
                  num_sequences * sizeof(backend::AttentionSequence));
  be.CopyToDevice(tables_->data(), tables_host_.data(), tables_host_.size() * sizeof(int32_t));

  backend::AttentionBatch attention_batch;
  attention_batch.sequences = static_cast<const backend::AttentionSequence*>(sequences_->data());
  attention_batch.num_sequences = num_sequences;
  attention_batch.block_tables = tables_->i32();
  attention_batch.num_tokens = n;
  attention_batch.max_context_len = max_context;

  const int64_t hidden = config_.hidden_size;
  const int32_t heads = attention_.num_heads;        // this rank's query heads
  const int32_t kv_heads = attention_.num_kv_heads;  // and KV heads
  const int32_t head_dim = config_.head_dim;
  const int64_t inter = shard_.tensor.intermediate.size();
  const float eps = config_.rms_norm_eps;
  float* x = x_->f32();          // [n, hidden] residual stream
  float* h = h_->f32();          // [n, hidden] normalised
  float* delta = delta_->f32();  // [n, hidden] sublayer output
  float* q = q_->f32();          // [n, heads * head_dim]
  float* k = k_->f32();          // [n, kv_heads * head_dim]
  float* v = v_->f32();          // [n, kv_heads * head_dim]
  float* attn = attn_->f32();    // [n, heads * head_dim]
  float* gate = gate_->f32();    // [n, inter]
  float* up = up_->f32();        // [n, inter]
  const int32_t* positions = positions_->i32();
  const size_t activation_floats = static_cast<size_t>(n) * hidden;

  // Sums the TP ranks' partial results in place (device memory, after the
  // ops that wrote it have finished).
  parallel::Communicator* tp_group = shard_.tp > 1 ? links_.tensor_parallel : nullptr;
  auto all_reduce = [&](float* data) -> absl::Status {
    if (tp_group == nullptr) return absl::OkStatus();
    STRATA_RETURN_IF_ERROR(be.Synchronize());
    ScopedTimer timer(tp_collective_ns_);
    return tp_group->AllReduceSum(data, activation_floats);
  };

  if (shard_.first_stage()) {
    be.Embedding(embed_, shard_.tensor.vocab.begin, token_ids_->i32(), n, x);
    STRATA_RETURN_IF_ERROR(all_reduce(x));
  } else {
    ScopedTimer timer(pp_receive_ns_);
    STRATA_RETURN_IF_ERROR(links_.previous_stage->Recv(x, activation_floats * sizeof(float),
                                                       parallel::CommunicatorGroups::kLowerStage));
  }
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    if (l == 0) {
      be.RmsNorm(x, n, hidden, layer.input_norm, eps, h);
    } else {
      be.AddRmsNorm(x, delta, n, hidden, layer.input_norm, eps, h);  // x += MLP output
    }
    const backend::Backend::MatMulOutput qkv[] = {
        {&layer.q, layer.q_bias, q}, {&layer.k, layer.k_bias, k}, {&layer.v, layer.v_bias, v}};
    be.MatMulMany(h, n, qkv);
    be.Rope(q, n, heads, head_dim, positions, rope_cos_->f32(), rope_sin_->f32());
    be.Rope(k, n, kv_heads, head_dim, positions, rope_cos_->f32(), rope_sin_->f32());
    be.AppendKv(layer.kv, attention_, k, v, slots_->i32(), n);
    be.PagedAttention(q, attention_batch, layer.kv, attention_, attn);
    be.MatMul(attn, n, layer.o, nullptr, delta);
    STRATA_RETURN_IF_ERROR(all_reduce(delta));
    be.AddRmsNorm(x, delta, n, hidden, layer.post_norm, eps, h);  // x += attention output
    const backend::Backend::MatMulOutput gate_up[] = {{&layer.gate, nullptr, gate},
                                                      {&layer.up, nullptr, up}};
    be.MatMulMany(h, n, gate_up);
    be.SiluMul(gate, up, n * inter, gate);
    be.MatMul(gate, n, layer.down, nullptr, delta);
    STRATA_RETURN_IF_ERROR(all_reduce(delta));
  }

  if (!shard_.last_stage()) {
    // The next stage continues from the complete residual stream.
    be.Add(x, delta, static_cast<int64_t>(activation_floats), x);
    STRATA_RETURN_IF_ERROR(be.Synchronize());
    logits.clear();
    ScopedTimer timer(pp_send_ns_);
    return links_.next_stage->Send(x, activation_floats * sizeof(float),
                                   parallel::CommunicatorGroups::kHigherStage);
  }

  // Only the last token of each sequence that wants logits goes through the
  // final norm and the LM head: [rows, hidden] -> [rows, vocab].
  const auto rows = static_cast<int32_t>(logit_rows_host_.size());
  logits.resize(static_cast<size_t>(rows) * config_.vocab_size);
  if (rows == 0) return be.Synchronize();
  be.CopyToDevice(logit_rows_->data(), logit_rows_host_.data(), rows * sizeof(int32_t));
  be.GatherRows(x, hidden, logit_rows_->i32(), rows, last_x_->f32());
  be.GatherRows(delta, hidden, logit_rows_->i32(), rows, last_delta_->f32());
  be.AddRmsNorm(last_x_->f32(), last_delta_->f32(), rows, hidden, final_norm_, eps, last_h_->f32());
  be.MatMul(last_h_->f32(), rows, *lm_head_, nullptr, logits_->f32());
  if (shard_.tp == 1) {
    be.CopyToHost(logits.data(), logits_->data(), logits.size() * sizeof(float));
    return be.Synchronize();
  }
  return GatherLogits(rows, logits);
}

absl::Status LlamaModel::GatherLogits(int32_t rows, std::vector<float>& logits) {
  // Vocabulary slices may differ by one id (BalancedSplit): each rank pads
  // its rows to the widest slice so that one all-gather collects them all.
  backend::Backend& be = *backend_;
  const int64_t vocab = config_.vocab_size;
  const int64_t local = shard_.tensor.vocab.size();
  const int64_t widest = parallel::BalancedSplit(vocab, shard_.tp, 0).size();
  const size_t padded_floats = static_cast<size_t>(rows) * widest;
  gathered_logits_host_.resize(padded_floats * shard_.tp);
  if (be.name() == "cpu") {
    // Host memory (Gloo): pad and gather in host vectors.
    local_logits_host_.assign(padded_floats, 0.0f);
    for (int32_t r = 0; r < rows; ++r) {
      be.CopyToHost(local_logits_host_.data() + r * widest, logits_->f32() + r * local,
                    local * sizeof(float));
    }
    STRATA_RETURN_IF_ERROR(be.Synchronize());
    ScopedTimer timer(tp_collective_ns_);
    STRATA_RETURN_IF_ERROR(links_.tensor_parallel->AllGather(
        local_logits_host_.data(), padded_floats, gathered_logits_host_.data()));
  } else {
    // Device memory (NCCL takes device pointers): pad and gather in device
    // scratch, then copy the gathered rows to the host once. One allocation
    // holds [gathered: tp x padded | padded rows | a zero row]; the padding
    // columns stay zero because Allocate zero-fills and only [0, local) of a
    // padded row is written (Add of the zero row copies a logits row).
    const size_t gathered_floats = gathered_logits_host_.size();
    const bool pad = local != widest;
    const size_t scratch_floats =
        gathered_floats + (pad ? padded_floats + static_cast<size_t>(local) : 0);
    STRATA_ASSIGN_OR_RETURN(auto scratch, be.Allocate(scratch_floats * sizeof(float)));
    float* gathered = scratch->f32();
    const float* local_logits = logits_->f32();
    if (pad) {
      float* padded = gathered + gathered_floats;
      const float* zero_row = padded + padded_floats;
      for (int32_t r = 0; r < rows; ++r) {
        be.Add(logits_->f32() + r * local, zero_row, local, padded + r * widest);
      }
      local_logits = padded;
    }
    STRATA_RETURN_IF_ERROR(be.Synchronize());
    {
      ScopedTimer timer(tp_collective_ns_);
      STRATA_RETURN_IF_ERROR(
          links_.tensor_parallel->AllGather(local_logits, padded_floats, gathered));
    }
    be.CopyToHost(gathered_logits_host_.data(), gathered, gathered_floats * sizeof(float));
    STRATA_RETURN_IF_ERROR(be.Synchronize());
  }
  for (int t = 0; t < shard_.tp; ++t) {
    const parallel::IndexRange slice = parallel::BalancedSplit(vocab, shard_.tp, t);
    const float* from = gathered_logits_host_.data() + static_cast<size_t>(t) * padded_floats;
    for (int32_t r = 0; r < rows; ++r) {
      std::copy_n(from + r * widest, slice.size(), logits.data() + r * vocab + slice.begin);
    }
  }
  return absl::OkStatus();
}

}  // namespace strata::model

#include "worker/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/process_memory.h"
#include "common/progress.h"
#include "common/status_macros.h"
#include "spdlog/spdlog.h"
#include "worker/backend/convert.h"
#include "worker/backend/rope_table.h"
#include "worker/model/llama_weights.h"
#include "worker/model/random_weights.h"

namespace strata::model {
namespace {

constexpr uint64_t kDefaultKvBudgetBytes = 8ull << 30;
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
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, std::move(backend)));
  model->attention_.num_heads = config.num_attention_heads;
  model->attention_.num_kv_heads = config.num_key_value_heads;
  model->attention_.head_dim = config.head_dim;
  model->attention_.scale = 1.0f / std::sqrt(static_cast<float>(config.head_dim));
  if (options.random_weights) {
    STRATA_RETURN_IF_ERROR(model->LoadRandom(options));
  } else {
    STRATA_RETURN_IF_ERROR(model->LoadFromCheckpoint(options));
  }
  STRATA_RETURN_IF_ERROR(model->AllocateCache(options));
  return model;
}

absl::Status LlamaModel::LoadFromCheckpoint(const LoadOptions& options) {
  STRATA_ASSIGN_OR_RETURN(checkpoint_, Checkpoint::Open(options.model_dir));
  const std::vector<TensorSpec> specs = LlamaTensorSpecs(config_);
  std::vector<HostTensor> tensors(specs.size());
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    const TensorView* tensor = checkpoint_->Find(spec.name);
    if (tensor == nullptr) {
      if (spec.optional) continue;
      return absl::NotFoundError(absl::StrCat(checkpoint_->description(), ": missing tensor '",
                                              spec.name, "' (shape ", ShapeString(spec.shape),
                                              " from config.json)"));
    }
    if (tensor->shape != spec.shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          *tensor->file, ": tensor '", spec.name, "' has shape ", ShapeString(tensor->shape),
          ", expected ", ShapeString(spec.shape), " from config.json"));
    }
    tensors[i] = {tensor->data, tensor->dtype, tensor->shape};
    total_bytes += tensor->size_bytes;
  }
  {
    Progress progress("loading weights", total_bytes);
    uint64_t checksum = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      if (tensors[i].data == nullptr) continue;
      const TensorView* tensor = checkpoint_->Find(specs[i].name);
      checksum += TouchPages(tensor->data, tensor->size_bytes);
      progress.Advance(tensor->size_bytes);
    }
    spdlog::debug("weights paged in (checksum {})", checksum);
  }
  return ImportWeights(tensors, options.weight_dtype.value_or(tensors.front().dtype));
}

absl::Status LlamaModel::LoadRandom(const LoadOptions& options) {
  const DType dtype = options.weight_dtype.value_or(DType::kBF16);
  const std::vector<TensorSpec> specs = LlamaTensorSpecs(config_);
  uint64_t total_bytes = 0;
  std::vector<uint64_t> offsets;
  for (const TensorSpec& spec : specs) {
    offsets.push_back(total_bytes);
    const uint64_t size = static_cast<uint64_t>(Elements(spec.shape)) *
                          (spec.shape.size() == 2 ? DTypeSize(dtype) : sizeof(float));
    total_bytes += (size + 63) / 64 * 64;
  }
  STRATA_ASSIGN_OR_RETURN(auto buffer, backend::HostBuffer::Allocate(total_bytes));
  auto* base = static_cast<std::byte*>(buffer->data());
  std::vector<HostTensor> tensors(specs.size());
  {
    Progress progress("generating random weights", total_bytes);
    for (size_t i = 0; i < specs.size(); ++i) {
      const TensorSpec& spec = specs[i];
      const bool matrix = spec.shape.size() == 2;
      const bool norm = spec.name.find("norm") != std::string::npos;
      HostTensor& tensor = tensors[i];
      tensor.data = base + offsets[i];
      tensor.dtype = matrix ? dtype : DType::kF32;
      tensor.shape = spec.shape;
      const int64_t count = Elements(spec.shape);
      FillRandom(base + offsets[i], tensor.dtype, count, norm ? 1.0f : 0.0f, kRandomStddev,
                 options.random_seed, i, options.num_threads);
      progress.Advance(static_cast<uint64_t>(count) * DTypeSize(tensor.dtype));
    }
  }
  host_storage_.push_back(std::move(buffer));
  return ImportWeights(tensors, dtype);
}

absl::StatusOr<backend::Weight> LlamaModel::ImportMatrix(const HostTensor& tensor, DType dtype) {
  const int64_t rows = tensor.shape[0];
  const int64_t cols = tensor.shape[1];
  if (tensor.dtype == dtype) return backend_->ImportWeight(tensor.data, dtype, rows, cols);
  const int64_t count = rows * cols;
  STRATA_ASSIGN_OR_RETURN(
      auto converted, backend::HostBuffer::Allocate(static_cast<size_t>(count) * DTypeSize(dtype)));
  ConvertElements(tensor.data, tensor.dtype, converted->data(), dtype, count);
  auto weight = backend_->ImportWeight(converted->data(), dtype, rows, cols);
  host_storage_.push_back(std::move(converted));
  return weight;
}

absl::StatusOr<const float*> LlamaModel::ImportVector(const HostTensor& tensor) {
  const int64_t count = Elements(tensor.shape);
  std::vector<float> values(count);
  ConvertElements(tensor.data, tensor.dtype, values.data(), DType::kF32, count);
  STRATA_ASSIGN_OR_RETURN(auto buffer, backend_->Allocate(values.size() * sizeof(float)));
  backend_->CopyToDevice(buffer->data(), values.data(), values.size() * sizeof(float));
  const float* device = buffer->f32();
  device_storage_.push_back(std::move(buffer));
  return device;
}

absl::Status LlamaModel::ImportWeights(const std::vector<HostTensor>& tensors, DType matrix_dtype) {
  const std::vector<TensorSpec> specs = LlamaTensorSpecs(config_);
  absl::flat_hash_map<std::string, const HostTensor*> by_name;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (tensors[i].data != nullptr) by_name.emplace(specs[i].name, &tensors[i]);
  }
  auto get = [&](const std::string& name) { return by_name.at(name); };
  uint64_t vector_bytes = 0;
  auto vec = [&](const std::string& name) -> absl::StatusOr<const float*> {
    vector_bytes += static_cast<uint64_t>(Elements(get(name)->shape)) * sizeof(float);
    return ImportVector(*get(name));
  };

  weight_dtype_ = matrix_dtype;
  STRATA_ASSIGN_OR_RETURN(embed_, ImportMatrix(*get("model.embed_tokens.weight"), matrix_dtype));
  uint64_t layer_bytes = 0;
  layers_.resize(config_.num_hidden_layers);
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    Layer& layer = layers_[l];
    auto matrix = [&](const char* suffix, backend::Weight& out) -> absl::Status {
      STRATA_ASSIGN_OR_RETURN(out, ImportMatrix(*get(LayerTensorName(l, suffix)), matrix_dtype));
      layer_bytes += out.bytes();
      return absl::OkStatus();
    };
    STRATA_RETURN_IF_ERROR(matrix("self_attn.q_proj.weight", layer.q));
    STRATA_RETURN_IF_ERROR(matrix("self_attn.k_proj.weight", layer.k));
    STRATA_RETURN_IF_ERROR(matrix("self_attn.v_proj.weight", layer.v));
    STRATA_RETURN_IF_ERROR(matrix("self_attn.o_proj.weight", layer.o));
    STRATA_RETURN_IF_ERROR(matrix("mlp.gate_proj.weight", layer.gate));
    STRATA_RETURN_IF_ERROR(matrix("mlp.up_proj.weight", layer.up));
    STRATA_RETURN_IF_ERROR(matrix("mlp.down_proj.weight", layer.down));
    STRATA_ASSIGN_OR_RETURN(layer.input_norm, vec(LayerTensorName(l, "input_layernorm.weight")));
    STRATA_ASSIGN_OR_RETURN(layer.post_norm,
                            vec(LayerTensorName(l, "post_attention_layernorm.weight")));
    if (config_.attention_bias) {
      STRATA_ASSIGN_OR_RETURN(layer.q_bias, vec(LayerTensorName(l, "self_attn.q_proj.bias")));
      STRATA_ASSIGN_OR_RETURN(layer.k_bias, vec(LayerTensorName(l, "self_attn.k_proj.bias")));
      STRATA_ASSIGN_OR_RETURN(layer.v_bias, vec(LayerTensorName(l, "self_attn.v_proj.bias")));
    }
  }
  STRATA_ASSIGN_OR_RETURN(final_norm_, vec("model.norm.weight"));
  if (config_.tie_word_embeddings) {
    lm_head_ = &embed_;
  } else if (by_name.contains("lm_head.weight")) {
    STRATA_ASSIGN_OR_RETURN(lm_head_storage_, ImportMatrix(*get("lm_head.weight"), matrix_dtype));
    lm_head_ = &lm_head_storage_;
  } else {
    spdlog::warn("no lm_head.weight: using model.embed_tokens.weight as the output projection");
    lm_head_ = &embed_;
  }
  const bool separate_head = lm_head_ != &embed_;
  weight_bytes_ =
      embed_.bytes() + layer_bytes + vector_bytes + (separate_head ? lm_head_->bytes() : 0);
  decode_read_bytes_ = layer_bytes + vector_bytes + lm_head_->bytes();
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
  const uint64_t token_bytes = static_cast<uint64_t>(config_.num_hidden_layers) * 2 *
                               config_.num_key_value_heads * config_.head_dim * sizeof(float);
  if (options.kv_num_blocks > 0) {
    num_blocks_ = options.kv_num_blocks;
  } else {
    uint64_t tokens = static_cast<uint64_t>(config_.max_position_embeddings) * 4;
    if (tokens * token_bytes > kDefaultKvBudgetBytes) {
      tokens = std::max<uint64_t>(block_size_, kDefaultKvBudgetBytes / token_bytes);
      spdlog::warn("KV cache capped at {} tokens ({})", tokens, HumanBytes(tokens * token_bytes));
    }
    num_blocks_ = static_cast<int32_t>((tokens + block_size_ - 1) / block_size_);
  }
  attention_.block_size = block_size_;
  const uint64_t layer_floats = static_cast<uint64_t>(num_blocks_) * block_size_ *
                                config_.num_key_value_heads * config_.head_dim;
  STRATA_ASSIGN_OR_RETURN(
      kv_cache_, backend_->Allocate(layer_floats * 2 * sizeof(float) * config_.num_hidden_layers));
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
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
    const size_t q_dim = static_cast<size_t>(config_.num_attention_heads) * config_.head_dim;
    const size_t kv_dim = static_cast<size_t>(config_.num_key_value_heads) * config_.head_dim;
    const size_t inter = config_.intermediate_size;
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
    STRATA_RETURN_IF_ERROR(reserve(logits_, s * static_cast<size_t>(config_.vocab_size) * f));
    sequence_capacity_ = static_cast<int32_t>(s);
  }
  if (table_entries > table_capacity_) {
    const size_t e = std::max(table_entries, table_capacity_ * 3 / 2);
    STRATA_RETURN_IF_ERROR(reserve(tables_, e * sizeof(int32_t)));
    table_capacity_ = e;
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::Forward(const ForwardBatch& batch, std::vector<float>& logits) {
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
  const int32_t heads = config_.num_attention_heads;
  const int32_t kv_heads = config_.num_key_value_heads;
  const int32_t head_dim = config_.head_dim;
  const float eps = config_.rms_norm_eps;
  float* x = x_->f32();          // [n, hidden] residual stream
  float* h = h_->f32();          // [n, hidden] normalised
  float* delta = delta_->f32();  // [n, hidden] sublayer output
  float* q = q_->f32();          // [n, heads * head_dim]
  float* k = k_->f32();          // [n, kv_heads * head_dim]
  float* v = v_->f32();          // [n, kv_heads * head_dim]
  float* attn = attn_->f32();    // [n, heads * head_dim]
  float* gate = gate_->f32();    // [n, intermediate]
  float* up = up_->f32();        // [n, intermediate]
  const int32_t* positions = positions_->i32();

  be.Embedding(embed_, token_ids_->i32(), n, x);
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
    be.AddRmsNorm(x, delta, n, hidden, layer.post_norm, eps, h);  // x += attention output
    const backend::Backend::MatMulOutput gate_up[] = {{&layer.gate, nullptr, gate},
                                                      {&layer.up, nullptr, up}};
    be.MatMulMany(h, n, gate_up);
    be.SiluMul(gate, up, n * static_cast<int64_t>(config_.intermediate_size), gate);
    be.MatMul(gate, n, layer.down, nullptr, delta);
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
  be.CopyToHost(logits.data(), logits_->data(), logits.size() * sizeof(float));
  return be.Synchronize();
}

}  // namespace strata::model

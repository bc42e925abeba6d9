// The ops a Llama-family forward pass needs, behind one small interface, so
// that the model is written once and runs on the CPU backend (cpu/) or a
// device backend (CUDA, later) unchanged.
//
// Memory contract: activations, KV cache and step metadata live in
// DeviceBuffers allocated through the backend. Every `float*` / `int32_t*`
// argument of an op is a device address inside such a buffer (or inside an
// imported Weight); callers pass these addresses around but never dereference
// them. Host data crosses only through CopyToDevice / CopyToHost /
// ImportWeight. Ops are ordered: each sees the results of the ops issued
// before it; Synchronize() waits for all of them (CPU ops run synchronously).
//
// Thread-safety: a Backend is used by one thread at a time (the model's
// Forward); kernels may use the backend's own worker threads internally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace strata::backend {

// A block of device memory, released by its destructor. Zero-filled when
// allocated.
class DeviceBuffer {
 public:
  virtual ~DeviceBuffer() = default;
  virtual void* data() = 0;
  virtual size_t size_bytes() const = 0;

  float* f32() { return static_cast<float*>(data()); }
  int32_t* i32() { return static_cast<int32_t*>(data()); }
};

// A weight matrix [rows, cols], row-major, in F32, F16 or BF16 (vectors are
// [1, cols]). `data` is a device address; `storage` owns it when the backend
// had to copy (empty when the weight is a view of host memory, e.g. an mmap).
struct Weight {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::unique_ptr<DeviceBuffer> storage;

  int64_t elements() const { return rows * cols; }
  uint64_t bytes() const { return static_cast<uint64_t>(elements()) * DTypeSize(dtype); }
};

// Geometry of one layer's paged KV cache. Keys and values are F32, each
// num_blocks * block_size * num_kv_heads * head_dim floats; a token at
// position p of a sequence lives in slot block_table[p / block_size] *
// block_size + p % block_size. Within a block, the layout is the backend's
// own (only its AppendKv and PagedAttention touch the cache): CUDA keeps
// [block_size, num_kv_heads, head_dim] for both, the CPU backend transposes
// keys (see cpu/attention.h).
struct KvCacheLayer {
  float* key = nullptr;
  float* value = nullptr;
};

struct AttentionParams {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;  // divides num_heads (GQA: query head h reads kv head h / group)
  int32_t head_dim = 0;
  int32_t block_size = 0;
  float scale = 1.0f;  // usually 1 / sqrt(head_dim)
};

// One sequence of a step, as stored in device memory (plain data).
// Its tokens are rows [first_token, first_token + num_tokens) of the batch, at
// positions [context_len - num_tokens, context_len); its block table is
// block_tables[block_table_offset ...].
struct AttentionSequence {
  int32_t first_token = 0;
  int32_t num_tokens = 0;
  int32_t context_len = 0;
  int32_t block_table_offset = 0;
};

// Step metadata for attention. Pointers are device addresses.
struct AttentionBatch {
  const AttentionSequence* sequences = nullptr;  // [num_sequences]
  int32_t num_sequences = 0;
  const int32_t* block_tables = nullptr;  // flattened, see AttentionSequence
  int32_t num_tokens = 0;
  int32_t max_context_len = 0;  // host-side bound, for scratch sizing
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const = 0;

  // ---- Memory -------------------------------------------------------------
  virtual absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(size_t bytes) = 0;
  virtual void CopyToDevice(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual void CopyToHost(void* host_dst, const void* device_src, size_t bytes) = 0;
  // Makes a host weight [rows, cols] usable by kernels. A backend that shares
  // host memory returns a view (zero copy): then `host` must outlive the
  // Weight. Others copy it into device memory owned by Weight::storage.
  virtual absl::StatusOr<Weight> ImportWeight(const void* host, DType dtype, int64_t rows,
                                              int64_t cols) = 0;
  // Waits until every op issued so far has finished.
  virtual absl::Status Synchronize() = 0;

  // ---- Ops (shapes in elements; all pointers are device addresses) ---------
  // y[n, w.rows] = x[n, w.cols] · w^T (+ bias[w.rows] when bias != nullptr).
  virtual void MatMul(const float* x, int64_t n, const Weight& w, const float* bias, float* y) = 0;
  // Several products of the same x (q, k and v; gate and up): for each
  // output, y = x · w^T (+ bias). Same result as one MatMul per output; a
  // backend may run them as one kernel. REQUIRES: every w has x's width.
  struct MatMulOutput {
    const Weight* w = nullptr;
    const float* bias = nullptr;
    float* y = nullptr;
  };
  virtual void MatMulMany(const float* x, int64_t n, std::span<const MatMulOutput> outputs) {
    for (const MatMulOutput& o : outputs) MatMul(x, n, *o.w, o.bias, o.y);
  }
  // out[n, d] = x / sqrt(mean(x^2) + eps) * weight[d], row by row. out may be x.
  virtual void RmsNorm(const float* x, int64_t n, int64_t d, const float* weight, float eps,
                       float* out) = 0;
  // residual[n, d] += delta[n, d]; out = RmsNorm(residual). (Fused: one pass.)
  virtual void AddRmsNorm(float* residual, const float* delta, int64_t n, int64_t d,
                          const float* weight, float eps, float* out) = 0;
  // Rotates x[n, num_heads * head_dim] in place, Hugging Face "rotate half"
  // layout: for i < head_dim / 2, (x[i], x[i + head_dim / 2]) turns by the
  // angle of frequency i at positions[t]. cos, sin: [max_positions, head_dim / 2].
  virtual void Rope(float* x, int64_t n, int32_t num_heads, int32_t head_dim,
                    const int32_t* positions, const float* cos, const float* sin) = 0;
  // out[i] = silu(gate[i]) * up[i] for i < count. out may alias gate.
  virtual void SiluMul(const float* gate, const float* up, int64_t count, float* out) = 0;
  // out[i] = a[i] + b[i]. out may alias a or b.
  virtual void Add(const float* a, const float* b, int64_t count, float* out) = 0;
  // out[i, :] = table[ids[i] - first_id, :] widened to F32, for i < n. The
  // table may be one vocabulary-parallel shard holding ids [first_id,
  // first_id + table.rows): an id outside that range gives a zero row, so
  // that summing the shards' outputs gives the full lookup.
  virtual void Embedding(const Weight& table, int64_t first_id, const int32_t* ids, int64_t n,
                         float* out) = 0;
  // dst[i, :] = src[rows[i], :] for i < m; rows are d floats wide.
  virtual void GatherRows(const float* src, int64_t d, const int32_t* rows, int64_t m,
                          float* dst) = 0;
  // Writes k[t], v[t] ([n, num_kv_heads * head_dim]) into cache slots[t].
  virtual void AppendKv(const KvCacheLayer& cache, const AttentionParams& params, const float* k,
                        const float* v, const int32_t* slots, int64_t n) = 0;
  // out[t, h * head_dim ...] = softmax(scale · q_t,h · K^T) · V over the
  // sequence's cached positions [0, position(t)] (causal: a prefill chunk's
  // token sees the cache before the chunk and the chunk's tokens up to itself).
  // REQUIRES: the K/V of every attended position are in the cache.
  virtual void PagedAttention(const float* q, const AttentionBatch& batch,
                              const KvCacheLayer& cache, const AttentionParams& params,
                              float* out) = 0;
};

}  // namespace strata::backend

#include "worker/backend/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>

#include "worker/backend/convert.h"
#include "worker/backend/cpu/gemv_kernels.h"

namespace strata::backend::cpu {
namespace {

// A product of fewer multiply-adds than this runs on one thread: a parallel
// region costs a few microseconds, the whole product less.
constexpr int64_t kMinParallelWeights = 64 * 1024;
// Weight bytes per dynamically scheduled kernel chunk: long enough sequential
// runs for the hardware prefetchers, small enough to balance threads. With
// several groups of x rows a chunk is read again by each group, so it is
// smaller: it must stay in L2 next to the rows of x streaming past it.
constexpr int64_t kGemvChunkBytes = 512 * 1024;
constexpr int64_t kReusedChunkBytes = 128 * 1024;
// Widened tile size for the sgemm path, in floats (about 2 MiB: stays in L2/L3
// while sgemm packs it).
constexpr int64_t kTileFloats = 512 * 1024;

}  // namespace

CpuMatMul::CpuMatMul(ThreadPool& pool, bool use_avx512, int64_t kernel_row_limit)
    : pool_(pool),
      avx512_(use_avx512 && CpuHasAvx512()),
      bf16_dot_(avx512_ && CpuHasAvx512Bf16()),
      kernel_row_limit_(kernel_row_limit >= 0 ? kernel_row_limit
                        : avx512_             ? kKernelRowLimitAvx512
                                              : kKernelRowLimitAvx2),
      tiles_(pool.num_threads()) {}

void CpuMatMul::Run(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  if (n <= 0) return;
  if (n <= kernel_row_limit_) {
    const Output output{&w, bias, y};
    RunGemv(x, n, std::span<const Output>(&output, 1));
  } else {
    RunSgemm(x, n, w, bias, y);
  }
}

void CpuMatMul::RunMany(const float* x, int64_t n, std::span<const Output> outputs) {
  if (n <= 0 || outputs.empty()) return;
  if (n <= kernel_row_limit_) {
    RunGemv(x, n, outputs);
  } else {
    // Prefill: each product is long enough to amortise its own region.
    for (const Output& o : outputs) RunSgemm(x, n, *o.w, o.bias, o.y);
  }
}

void CpuMatMul::RunGemv(const float* x, int64_t n, std::span<const Output> outputs) {
  const int64_t in = outputs.front().w->cols;
  const int64_t block = avx512_ ? kSplitBlockAvx512 : kSplitBlockAvx2;
  const auto widening_kernel = avx512_ ? &GemvAvx512 : &GemvAvx2;

  // Chunks of about chunk_bytes of weights (a multiple of the kernels'
  // 8-row step), over all outputs, taken dynamically by the threads; all on
  // one thread when the weights are few.
  chunks_.clear();
  const int64_t chunk_bytes = n > kGemvMaxRows ? kReusedChunkBytes : kGemvChunkBytes;
  int64_t total_weights = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Weight& w = *outputs[i].w;
    total_weights += w.elements();
    const int64_t row_bytes = in * static_cast<int64_t>(DTypeSize(w.dtype));
    const int64_t chunk_rows = std::max<int64_t>(16, chunk_bytes / row_bytes / 8 * 8);
    for (int64_t r = 0; r < w.rows; r += chunk_rows) {
      chunks_.push_back({static_cast<int32_t>(i), r, std::min(w.rows, r + chunk_rows)});
    }
  }
  const bool parallel = total_weights * n >= kMinParallelWeights;

  bool any_bf16 = false;
  for (const Output& o : outputs) any_bf16 |= o.w->dtype == DType::kBF16;
  const bool split_x = any_bf16 && !bf16_dot_;
  const bool round_x = any_bf16 && bf16_dot_;
  if (split_x) {
    if (x_split_.size() < static_cast<size_t>(n * in)) x_split_.resize(n * in);
    for (int64_t j = 0; j < n; ++j) SplitEvenOdd(x + j * in, in, block, x_split_.data() + j * in);
  }
  if (round_x) {
    if (x_bf16_.size() < static_cast<size_t>(n * in)) x_bf16_.resize(n * in);
    RoundToBf16(x, n * in, x_bf16_.data());
  }
  kernels_.resize(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) {
    kernels_[i] =
        bf16_dot_ && outputs[i].w->dtype == DType::kBF16 ? &GemvAvx512Bf16 : widening_kernel;
  }
  // One argument set per (output, group of kGemvMaxRows rows of x).
  const int64_t groups = (n + kGemvMaxRows - 1) / kGemvMaxRows;
  args_.resize(outputs.size() * groups);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Output& o = outputs[i];
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t r0 = g * kGemvMaxRows;
      GemvArgs& a = args_[i * groups + g];
      a.x = x + r0 * in;
      a.x_split = split_x ? x_split_.data() + r0 * in : nullptr;
      a.x_bf16 = round_x ? x_bf16_.data() + r0 * in : nullptr;
      a.n = std::min<int64_t>(kGemvMaxRows, n - r0);
      a.in = in;
      a.w = o.w->data;
      a.dtype = o.w->dtype;
      a.y = o.y + r0 * o.w->rows;
      a.ldy = o.w->rows;
      a.bias = o.bias;
    }
  }
  // Each chunk of W meets every group of x while it is in cache.
  auto run_chunks = [&](int64_t begin, int64_t end, int) {
    for (int64_t c = begin; c < end; ++c) {
      const Chunk& chunk = chunks_[c];
      for (int64_t g = 0; g < groups; ++g) {
        kernels_[chunk.output](args_[chunk.output * groups + g], chunk.begin, chunk.end);
      }
    }
  };
  const auto num_chunks = static_cast<int64_t>(chunks_.size());
  if (parallel) {
    pool_.ParallelForDynamic(num_chunks, 1, run_chunks);
  } else {
    run_chunks(0, num_chunks, 0);
  }
}

void CpuMatMul::RunSgemm(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  const int64_t in = w.cols;
  const int64_t out = w.rows;
  const int64_t tile_rows = std::max<int64_t>(16, kTileFloats / in / 16 * 16);
  const size_t element_size = DTypeSize(w.dtype);
  // Tiles are taken dynamically: a thread the OS runs late costs one tile.
  pool_.ParallelForDynamic(out, tile_rows, [&](int64_t begin, int64_t end, int thread) {
    const int64_t rows = end - begin;
    const float* b;
    if (w.dtype == DType::kF32) {
      b = static_cast<const float*>(w.data) + begin * in;
    } else {
      std::vector<float>& tile = tiles_[thread];
      if (tile.size() < static_cast<size_t>(tile_rows * in)) tile.resize(tile_rows * in);
      WidenToF32(static_cast<const std::byte*>(w.data) + begin * in * element_size, w.dtype,
                 rows * in, tile.data());
      b = tile.data();
    }
    // y[:, begin:end] = x · tile^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(n),
                static_cast<blasint>(rows), static_cast<blasint>(in), 1.0f, x,
                static_cast<blasint>(in), b, static_cast<blasint>(in), 0.0f, y + begin,
                static_cast<blasint>(out));
    if (bias != nullptr) {
      for (int64_t i = 0; i < n; ++i) {
        float* row = y + i * out;
        for (int64_t o = begin; o < end; ++o) row[o] += bias[o];
      }
    }
  });
}

}  // namespace strata::backend::cpu

#include "worker/backend/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>

#include "worker/backend/convert.h"
#include "worker/backend/cpu/gemv_kernels.h"

namespace strata::backend::cpu {
namespace {

// A GEMV over fewer weights than this runs on one thread: a parallel region
// costs a few microseconds, the whole product less.
constexpr int64_t kMinParallelWeights = 64 * 1024;
// Weight bytes per dynamically scheduled GEMV chunk: long enough sequential
// runs for the hardware prefetchers, small enough to balance threads.
constexpr int64_t kGemvChunkBytes = 256 * 1024;
// Widened tile size for the sgemm path, in floats (about 2 MiB: stays in L2/L3
// while sgemm packs it).
constexpr int64_t kTileFloats = 512 * 1024;

}  // namespace

CpuMatMul::CpuMatMul(ThreadPool& pool, bool use_avx512)
    : pool_(pool), avx512_(use_avx512 && CpuHasAvx512()), tiles_(pool.num_threads()) {}

void CpuMatMul::Run(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  if (n <= 0) return;
  if (n <= kGemvRowLimit) {
    RunGemv(x, n, w, bias, y);
  } else {
    RunSgemm(x, n, w, bias, y);
  }
}

void CpuMatMul::RunGemv(const float* x, int64_t n, const Weight& w, const float* bias, float* y) {
  const int64_t in = w.cols;
  const int64_t out = w.rows;
  const int64_t block = avx512_ ? kSplitBlockAvx512 : kSplitBlockAvx2;
  const auto kernel = avx512_ ? &GemvAvx512 : &GemvAvx2;
  // Chunks of about kGemvChunkBytes of weights, taken dynamically by the
  // threads; the whole matrix on one thread when it is small.
  const int64_t row_bytes = in * static_cast<int64_t>(DTypeSize(w.dtype));
  const int64_t chunk_rows = w.elements() < kMinParallelWeights
                                 ? out
                                 : std::max<int64_t>(16, kGemvChunkBytes / row_bytes / 4 * 4);
  for (int64_t r0 = 0; r0 < n; r0 += kGemvMaxRows) {
    GemvArgs args;
    args.x = x + r0 * in;
    args.n = std::min<int64_t>(kGemvMaxRows, n - r0);
    args.in = in;
    args.w = w.data;
    args.dtype = w.dtype;
    args.y = y + r0 * out;
    args.ldy = out;
    args.bias = bias;
    if (w.dtype == DType::kBF16) {
      if (x_split_.size() < static_cast<size_t>(kGemvMaxRows * in)) {
        x_split_.resize(kGemvMaxRows * in);
      }
      for (int64_t j = 0; j < args.n; ++j) {
        SplitEvenOdd(args.x + j * in, in, block, x_split_.data() + j * in);
      }
      args.x_split = x_split_.data();
    }
    pool_.ParallelForDynamic(out, chunk_rows,
                             [&](int64_t begin, int64_t end, int) { kernel(args, begin, end); });
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

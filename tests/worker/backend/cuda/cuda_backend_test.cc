// Kernel parity: every Backend op runs on the CPU backend (the reference) and
// on the CUDA backend over the same random inputs, at random and odd shapes,
// and the outputs must agree within these documented tolerances (max |cuda -
// cpu| / max(1, max |cpu|) unless said otherwise):
//   - exact-data ops (Embedding, GatherRows, AppendKv): bit-identical;
//   - element-wise ops (RmsNorm, AddRmsNorm, Rope, SiluMul, Add): 1e-5
//     (fast-math differences in rsqrt / exp and summation order);
//   - MatMul with n <= 8 rows (GEMV kernel, weights widened to F32 as on the
//     CPU): 1e-5, summation order only;
//   - MatMul with more rows (cuBLAS): F32 weights 1e-5 (FP32, no TF32); F16
//     weights 2e-3 and BF16 weights 1e-2, because x is rounded to the
//     weight's dtype for the tensor cores (relative rounding 2^-11 / 2^-8);
//   - PagedAttention: 1e-5 (prefill token tiles, decode in one block per
//     token and head, and decode split into partitions merged by a second
//     kernel);
//   - step graphs (replayed CUDA graphs) vs launches one by one: 1e-5.
// Labelled "gpu": every test skips when no CUDA device is visible.
#include "worker/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/worker/backend/random_matrix.h"
#include "worker/backend/cpu/cpu_backend.h"
#include "worker/backend/cuda/kernels.h"

namespace strata::backend {
namespace {

// One array on both backends.
struct Pair {
  std::unique_ptr<DeviceBuffer> cpu;
  std::unique_ptr<DeviceBuffer> cuda;
  float* cpu_f32() { return cpu->f32(); }
  float* cuda_f32() { return cuda->f32(); }
};

class CudaBackendParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cuda = CudaBackend::Create({});
    if (!cuda.ok()) GTEST_SKIP() << "no CUDA device, parity not checked: " << cuda.status();
    cuda_ = *std::move(cuda);
    cpu_ = std::make_unique<CpuBackend>(CpuBackendOptions{.num_threads = 2});
  }

  template <typename T>
  Pair Upload(const std::vector<T>& host) {
    const size_t bytes = std::max<size_t>(host.size() * sizeof(T), 4);
    Pair pair{*cpu_->Allocate(bytes), *cuda_->Allocate(bytes)};
    cpu_->CopyToDevice(pair.cpu->data(), host.data(), host.size() * sizeof(T));
    cuda_->CopyToDevice(pair.cuda->data(), host.data(), host.size() * sizeof(T));
    return pair;
  }
  Pair Zeros(size_t floats) { return Upload(std::vector<float>(floats, 0.0f)); }

  std::vector<float> Random(size_t count, float scale = 1.0f) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> values(count);
    for (float& v : values) v = normal(rng_);
    return values;
  }

  // Both results as host vectors.
  std::pair<std::vector<float>, std::vector<float>> Download(Pair& pair, size_t floats) {
    std::vector<float> cpu(floats), cuda(floats);
    cpu_->CopyToHost(cpu.data(), pair.cpu->data(), floats * sizeof(float));
    cuda_->CopyToHost(cuda.data(), pair.cuda->data(), floats * sizeof(float));
    EXPECT_TRUE(cuda_->Synchronize().ok()) << cuda_->Synchronize();
    return {cpu, cuda};
  }

  // max |cuda - cpu| / max(1, max |cpu|) over the first `floats` values.
  double Error(Pair& pair, size_t floats) {
    auto [cpu, cuda] = Download(pair, floats);
    double diff = 0.0;
    double scale = 1.0;
    for (size_t i = 0; i < floats; ++i) {
      if (std::isnan(cuda[i]) != std::isnan(cpu[i])) return INFINITY;
      diff = std::max(diff, static_cast<double>(std::fabs(cuda[i] - cpu[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(cpu[i])));
    }
    return diff / scale;
  }

  std::mt19937 rng_{20261128};
  std::unique_ptr<CpuBackend> cpu_;
  std::unique_ptr<CudaBackend> cuda_;
};

struct MatMulShape {
  int64_t n, rows, cols;
};

TEST_F(CudaBackendParityTest, MatMulMatchesCpuForEveryDtypeAndShape) {
  const MatMulShape shapes[] = {{1, 1, 1},     {1, 7, 13},     {2, 64, 128},  {3, 33, 255},
                                {8, 96, 4096}, {9, 130, 260},  {17, 257, 63}, {64, 128, 512},
                                {1, 4099, 72}, {33, 100, 1000}};
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (const MatMulShape& s : shapes) {
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE(std::string(DTypeName(dtype)) + " n=" + std::to_string(s.n) +
                     " rows=" + std::to_string(s.rows) + " cols=" + std::to_string(s.cols) +
                     (with_bias ? " bias" : ""));
        const RandomMatrix w = MakeRandomMatrix(dtype, s.rows * s.cols, rng_);
        auto cpu_w = cpu_->ImportWeight(w.bytes.data(), dtype, s.rows, s.cols);
        auto cuda_w = cuda_->ImportWeight(w.bytes.data(), dtype, s.rows, s.cols);
        ASSERT_TRUE(cpu_w.ok() && cuda_w.ok()) << cuda_w.status();
        Pair x = Upload(Random(s.n * s.cols));
        Pair bias = Upload(Random(s.rows));
        Pair y = Zeros(s.n * s.rows);
        cpu_->MatMul(x.cpu_f32(), s.n, *cpu_w, with_bias ? bias.cpu_f32() : nullptr, y.cpu_f32());
        cuda_->MatMul(x.cuda_f32(), s.n, *cuda_w, with_bias ? bias.cuda_f32() : nullptr,
                      y.cuda_f32());
        const double tolerance = s.n <= 8 || dtype == DType::kF32 ? 1e-5
                                 : dtype == DType::kF16           ? 2e-3
                                                                  : 1e-2;
        EXPECT_LE(Error(y, s.n * s.rows), tolerance);
      }
    }
  }
}

// Three outputs of one x (as q, k, v): one GEMV launch for decode batches,
// one product per output for larger ones; a bias on one output only.
TEST_F(CudaBackendParityTest, MatMulManyMatchesCpu) {
  const int64_t cols = 96;
  const int64_t rows[] = {40, 24, 9};
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int64_t n : {1, 5, 12}) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " n=" + std::to_string(n));
      std::vector<RandomMatrix> host;
      std::vector<Weight> cpu_w, cuda_w;
      std::vector<Pair> y;
      for (int64_t r : rows) {
        host.push_back(MakeRandomMatrix(dtype, r * cols, rng_));
        cpu_w.push_back(*cpu_->ImportWeight(host.back().bytes.data(), dtype, r, cols));
        cuda_w.push_back(*cuda_->ImportWeight(host.back().bytes.data(), dtype, r, cols));
        y.push_back(Zeros(n * r));
      }
      Pair x = Upload(Random(n * cols));
      Pair bias = Upload(Random(rows[1]));
      std::vector<Backend::MatMulOutput> cpu_out, cuda_out;
      for (size_t o = 0; o < y.size(); ++o) {
        cpu_out.push_back({&cpu_w[o], o == 1 ? bias.cpu_f32() : nullptr, y[o].cpu_f32()});
        cuda_out.push_back({&cuda_w[o], o == 1 ? bias.cuda_f32() : nullptr, y[o].cuda_f32()});
      }
      cpu_->MatMulMany(x.cpu_f32(), n, cpu_out);
      cuda_->MatMulMany(x.cuda_f32(), n, cuda_out);
      const double tolerance = n <= 8 || dtype == DType::kF32 ? 1e-5 : 1e-2;
      for (size_t o = 0; o < y.size(); ++o) {
        EXPECT_LE(Error(y[o], n * rows[o]), tolerance) << "output " << o;
      }
    }
  }
}

TEST_F(CudaBackendParityTest, RmsNormAndAddRmsNormMatchCpu) {
  for (int64_t d : {1, 7, 64, 257, 4096, 5000}) {
    for (int64_t n : {1, 3, 16}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " d=" + std::to_string(d));
      Pair x = Upload(Random(n * d));
      Pair delta = Upload(Random(n * d));
      Pair weight = Upload(Random(d));
      Pair out = Zeros(n * d);
      cpu_->RmsNorm(x.cpu_f32(), n, d, weight.cpu_f32(), 1e-5f, out.cpu_f32());
      cuda_->RmsNorm(x.cuda_f32(), n, d, weight.cuda_f32(), 1e-5f, out.cuda_f32());
      EXPECT_LE(Error(out, n * d), 1e-5);
      cpu_->AddRmsNorm(x.cpu_f32(), delta.cpu_f32(), n, d, weight.cpu_f32(), 1e-6f, out.cpu_f32());
      cuda_->AddRmsNorm(x.cuda_f32(), delta.cuda_f32(), n, d, weight.cuda_f32(), 1e-6f,
                        out.cuda_f32());
      EXPECT_LE(Error(x, n * d), 1e-6) << "residual";
      EXPECT_LE(Error(out, n * d), 1e-5);
      // In place: out is x.
      cpu_->RmsNorm(x.cpu_f32(), n, d, weight.cpu_f32(), 1e-5f, x.cpu_f32());
      cuda_->RmsNorm(x.cuda_f32(), n, d, weight.cuda_f32(), 1e-5f, x.cuda_f32());
      EXPECT_LE(Error(x, n * d), 1e-5) << "in place";
    }
  }
}

TEST_F(CudaBackendParityTest, RopeMatchesCpu) {
  const int32_t max_positions = 300;
  for (int32_t head_dim : {2, 6, 64, 128}) {
    for (int32_t heads : {1, 3, 8}) {
      const int64_t n = 7;
      const int32_t half = head_dim / 2;
      std::vector<float> cos(max_positions * half), sin(max_positions * half);
      for (int32_t p = 0; p < max_positions; ++p) {
        for (int32_t i = 0; i < half; ++i) {
          const double angle = p * std::pow(10000.0, -2.0 * i / head_dim);
          cos[p * half + i] = static_cast<float>(std::cos(angle));
          sin[p * half + i] = static_cast<float>(std::sin(angle));
        }
      }
      const std::vector<int32_t> positions = {0, 1, 2, 17, 150, 298, 299};
      Pair x = Upload(Random(n * heads * head_dim));
      Pair c = Upload(cos), s = Upload(sin), p = Upload(positions);
      cpu_->Rope(x.cpu_f32(), n, heads, head_dim, p.cpu->i32(), c.cpu_f32(), s.cpu_f32());
      cuda_->Rope(x.cuda_f32(), n, heads, head_dim, p.cuda->i32(), c.cuda_f32(), s.cuda_f32());
      EXPECT_LE(Error(x, n * heads * head_dim), 1e-5) << "head_dim " << head_dim;
    }
  }
}

TEST_F(CudaBackendParityTest, SiluMulAndAddMatchCpu) {
  for (int64_t count : {1, 31, 1000, 65537}) {
    Pair gate = Upload(Random(count, 4.0f));
    Pair up = Upload(Random(count));
    Pair out = Zeros(count);
    cpu_->SiluMul(gate.cpu_f32(), up.cpu_f32(), count, out.cpu_f32());
    cuda_->SiluMul(gate.cuda_f32(), up.cuda_f32(), count, out.cuda_f32());
    EXPECT_LE(Error(out, count), 1e-5) << count;
    cpu_->Add(out.cpu_f32(), up.cpu_f32(), count, out.cpu_f32());
    cuda_->Add(out.cuda_f32(), up.cuda_f32(), count, out.cuda_f32());
    EXPECT_LE(Error(out, count), 1e-5) << count;
    // out aliases gate, as the model calls it.
    cpu_->SiluMul(gate.cpu_f32(), up.cpu_f32(), count, gate.cpu_f32());
    cuda_->SiluMul(gate.cuda_f32(), up.cuda_f32(), count, gate.cuda_f32());
    EXPECT_LE(Error(gate, count), 1e-5) << count;
  }
}

TEST_F(CudaBackendParityTest, EmbeddingOfAShardIsExactWithZeroRowsOutside) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    const int64_t rows = 37, cols = 19, first_id = 100;
    const RandomMatrix table = MakeRandomMatrix(dtype, rows * cols, rng_);
    auto cpu_t = *cpu_->ImportWeight(table.bytes.data(), dtype, rows, cols);
    auto cuda_t = *cuda_->ImportWeight(table.bytes.data(), dtype, rows, cols);
    const std::vector<int32_t> ids = {100, 136, 99, 137, 0, 120, 120, 5000};
    Pair id = Upload(ids);
    Pair out = Upload(Random(ids.size() * cols));  // garbage that must be overwritten
    cpu_->Embedding(cpu_t, first_id, id.cpu->i32(), ids.size(), out.cpu_f32());
    cuda_->Embedding(cuda_t, first_id, id.cuda->i32(), ids.size(), out.cuda_f32());
    auto [cpu, cuda] = Download(out, ids.size() * cols);
    EXPECT_EQ(cpu, cuda) << DTypeName(dtype);
    EXPECT_EQ(cuda[2 * cols], 0.0f);  // id 99 is outside [100, 137)
  }
}

TEST_F(CudaBackendParityTest, GatherRowsAndAppendKvAreExact) {
  const int64_t d = 45;
  Pair src = Upload(Random(10 * d));
  const std::vector<int32_t> rows = {9, 0, 4, 4};
  Pair r = Upload(rows);
  Pair dst = Zeros(rows.size() * d);
  cpu_->GatherRows(src.cpu_f32(), d, r.cpu->i32(), rows.size(), dst.cpu_f32());
  cuda_->GatherRows(src.cuda_f32(), d, r.cuda->i32(), rows.size(), dst.cuda_f32());
  EXPECT_EQ(Error(dst, rows.size() * d), 0.0);

  AttentionParams params{.num_heads = 4, .num_kv_heads = 2, .head_dim = 6, .block_size = 4};
  const int64_t kv_row = 12, slots_total = 5 * 4;
  Pair key = Zeros(slots_total * kv_row), value = Zeros(slots_total * kv_row);
  const std::vector<int32_t> slots = {19, 0, 7, 8, 3};
  Pair s = Upload(slots);
  Pair k = Upload(Random(slots.size() * kv_row)), v = Upload(Random(slots.size() * kv_row));
  cpu_->AppendKv({key.cpu_f32(), value.cpu_f32()}, params, k.cpu_f32(), v.cpu_f32(), s.cpu->i32(),
                 slots.size());
  cuda_->AppendKv({key.cuda_f32(), value.cuda_f32()}, params, k.cuda_f32(), v.cuda_f32(),
                  s.cuda->i32(), slots.size());
  EXPECT_EQ(Error(key, slots_total * kv_row), 0.0);
  EXPECT_EQ(Error(value, slots_total * kv_row), 0.0);
}

struct AttentionCase {
  int32_t heads, kv_heads, head_dim, block_size;
};

// Batches over scrambled block tables: a long prefill chunk after cached
// context, a fresh prompt and decode tokens mixed (the prefill kernel, token
// tiles), and decode tokens only (the decode kernel).
TEST_F(CudaBackendParityTest, PagedAttentionMatchesCpuForPrefillAndDecode) {
  const AttentionCase cases[] = {{1, 1, 4, 1},     {4, 2, 6, 3},   {8, 8, 64, 16},
                                 {32, 8, 128, 16}, {6, 2, 256, 5}, {4, 1, 2, 7}};
  // (tokens in this step, context length after it)
  const std::vector<std::vector<std::pair<int32_t, int32_t>>> batches = {
      {{37, 90}, {12, 12}, {1, 1}, {1, 300}, {1, 17}, {5, 64}, {16, 16}, {17, 40}},
      {{1, 1}, {1, 300}, {1, 17}, {1, 64}, {1, 1000}},  // split into partitions
      {{1, 10}, {1, 64}, {1, 33}}};                     // one block per token and head
  for (const AttentionCase& c : cases) {
    for (const auto& sequences : batches) {
      SCOPED_TRACE("heads " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
                   " head_dim " + std::to_string(c.head_dim) + " block " +
                   std::to_string(c.block_size) + " sequences " + std::to_string(sequences.size()));
      AttentionParams params{c.heads, c.kv_heads, c.head_dim, c.block_size,
                             1.0f / std::sqrt(static_cast<float>(c.head_dim))};
      std::vector<AttentionSequence> descs;
      std::vector<int32_t> tables;
      int32_t num_tokens = 0, max_context = 0, num_blocks = 0;
      for (auto [tokens, context] : sequences) {
        const int32_t blocks = (context + c.block_size - 1) / c.block_size;
        descs.push_back({num_tokens, tokens, context, static_cast<int32_t>(tables.size())});
        for (int32_t b = 0; b < blocks; ++b) tables.push_back(num_blocks + b);
        num_blocks += blocks;
        num_tokens += tokens;
        max_context = std::max(max_context, context);
      }
      std::shuffle(tables.begin(), tables.end(), rng_);  // non-contiguous blocks
      const int64_t kv_row = static_cast<int64_t>(c.kv_heads) * c.head_dim;
      const size_t cache_floats = static_cast<size_t>(num_blocks) * c.block_size * kv_row;
      Pair key = Upload(Random(cache_floats)), value = Upload(Random(cache_floats));
      Pair q = Upload(Random(static_cast<size_t>(num_tokens) * c.heads * c.head_dim));
      Pair seq = Upload(descs), table = Upload(tables);
      Pair out = Zeros(static_cast<size_t>(num_tokens) * c.heads * c.head_dim);
      AttentionBatch cpu_batch{static_cast<const AttentionSequence*>(seq.cpu->data()),
                               static_cast<int32_t>(descs.size()), table.cpu->i32(), num_tokens,
                               max_context};
      AttentionBatch cuda_batch = cpu_batch;
      cuda_batch.sequences = static_cast<const AttentionSequence*>(seq.cuda->data());
      cuda_batch.block_tables = table.cuda->i32();
      cpu_->PagedAttention(q.cpu_f32(), cpu_batch, {key.cpu_f32(), value.cpu_f32()}, params,
                           out.cpu_f32());
      cuda_->PagedAttention(q.cuda_f32(), cuda_batch, {key.cuda_f32(), value.cuda_f32()}, params,
                            out.cuda_f32());
      EXPECT_LE(Error(out, static_cast<size_t>(num_tokens) * c.heads * c.head_dim), 1e-5);
    }
  }
}

// A step repeated with new data (and a leading copy whose size changes, as a
// block table's does) gives the same results replayed as a graph as when
// launched op by op, and the graph is in fact used.
TEST_F(CudaBackendParityTest, StepGraphsReplayMatchesEagerLaunches) {
  // 3 rows: the GEMV kernel; 12 rows: cuBLAS on tensor cores inside the graph.
  for (const int64_t n : {int64_t{3}, int64_t{12}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto graphed = CudaBackend::Create({.step_graphs = true});
    ASSERT_TRUE(graphed.ok()) << graphed.status();
    CudaBackend& g = **graphed;
    const int64_t rows = 70, cols = 64;
    const RandomMatrix w = MakeRandomMatrix(DType::kBF16, rows * cols, rng_);
    auto eager_w = *cuda_->ImportWeight(w.bytes.data(), DType::kBF16, rows, cols);
    auto graph_w = *g.ImportWeight(w.bytes.data(), DType::kBF16, rows, cols);
    const std::vector<float> norm = Random(cols);
    auto buffers = [&](Backend& b) {
      std::vector<std::unique_ptr<DeviceBuffer>> v;
      for (int64_t bytes : {n * cols * 4, cols * 4, n * cols * 4, n * rows * 4, int64_t{256}}) {
        v.push_back(*b.Allocate(bytes));
      }
      b.CopyToDevice(v[1]->data(), norm.data(), cols * 4);
      return v;
    };
    auto eager = buffers(*cuda_);
    auto graph = buffers(g);
    const int steps = 5;
    for (int step = 0; step < steps; ++step) {
      const std::vector<float> x = Random(n * cols);
      const std::vector<int32_t> table(1 + step % 3, step);  // leading copy, varying size
      std::vector<float> eager_y(n * rows), graph_y(n * rows);
      auto run = [&](Backend& b, std::vector<std::unique_ptr<DeviceBuffer>>& v,
                     const Weight& weight, std::vector<float>& y) {
        b.CopyToDevice(v[4]->data(), table.data(), table.size() * 4);
        b.CopyToDevice(v[0]->data(), x.data(), x.size() * 4);
        b.RmsNorm(v[0]->f32(), n, cols, v[1]->f32(), 1e-5f, v[2]->f32());
        b.MatMul(v[2]->f32(), n, weight, nullptr, v[3]->f32());
        b.CopyToHost(y.data(), v[3]->data(), y.size() * 4);
        ASSERT_TRUE(b.Synchronize().ok());
      };
      run(*cuda_, eager, eager_w, eager_y);
      run(g, graph, graph_w, graph_y);
      for (size_t i = 0; i < eager_y.size(); ++i) {
        ASSERT_NEAR(graph_y[i], eager_y[i], 1e-5f * (1.0f + std::fabs(eager_y[i])))
            << "step " << step << " element " << i;
      }
    }
    // Captured at a step's second sighting; with cuBLAS the first step is
    // split where the GEMM scratch is allocated, so one more runs eagerly.
    EXPECT_EQ(g.graphs_captured(), 1);
    EXPECT_EQ(g.graphs_launched(), n > 8 ? steps - 2 : steps - 1);
  }
}

// Host-side arithmetic of split decode attention (no device needed).
TEST(DecodeSplitTest, SplitsOnlyFewBlocksAndCoversTheLongestContext) {
  // Enough blocks already, or a short context: one block per token and head.
  EXPECT_EQ(cuda::ChooseDecodeSplit(64, 32, 8192).partitions, 1);
  EXPECT_EQ(cuda::ChooseDecodeSplit(1, 32, cuda::kDecodeMinSpan).partitions, 1);
  EXPECT_EQ(cuda::ChooseDecodeSplit(1, 32, 0).partitions, 1);
  // Batch 1, 32 heads, 200 positions: 4 spans of 64.
  cuda::DecodeSplit split = cuda::ChooseDecodeSplit(1, 32, 200);
  EXPECT_EQ(split.partitions, 4);
  EXPECT_EQ(split.span, 64);
  for (int32_t tokens : {1, 3, 16, 64}) {
    for (int32_t context : {1, 63, 64, 65, 200, 1000, 8192, 131072}) {
      SCOPED_TRACE("tokens " + std::to_string(tokens) + " context " + std::to_string(context));
      split = cuda::ChooseDecodeSplit(tokens, 8, context);
      EXPECT_EQ(split.partitions & (split.partitions - 1), 0);
      if (split.partitions == 1) continue;
      EXPECT_EQ(split.span & (split.span - 1), 0);
      EXPECT_GE(split.span, cuda::kDecodeMinSpan);
      EXPECT_GE(int64_t{1} * split.partitions * split.span, context);
      // Scratch stays bounded: about kDecodeTargetBlocks blocks at most twice over.
      EXPECT_LT(int64_t{1} * tokens * 8 * split.partitions, 2 * cuda::kDecodeTargetBlocks);
    }
  }
  // [tokens, heads, partitions, head_dim + 2] floats.
  EXPECT_EQ(cuda::DecodePartialFloats(3, 32, 128, 4), int64_t{3} * 32 * 4 * 130);
}

TEST_F(CudaBackendParityTest, UnsupportedHeadDimIsReportedBySynchronize) {
  AttentionParams params{.num_heads = 1, .num_kv_heads = 1, .head_dim = 512, .block_size = 16};
  AttentionBatch batch;
  cuda_->PagedAttention(nullptr, batch, {}, params, nullptr);
  const absl::Status status = cuda_->Synchronize();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(std::string(status.message()).find("head_dim 512"), std::string::npos) << status;
}

}  // namespace
}  // namespace strata::backend

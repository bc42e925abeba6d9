// Every CpuBackend op against a scalar loop, with odd sizes and all weight
// dtypes; buffers are allocated through the backend as a model does.
#include "worker/backend/cpu/cpu_backend.h"

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/backend/rope_table.h"

namespace strata::backend {
namespace {

class CpuBackendTest : public ::testing::Test {
 protected:
  CpuBackendTest() : backend_(CpuBackendOptions{2, true}) {}

  // A device copy of `values`, kept alive by the fixture.
  template <typename T>
  T* Upload(const std::vector<T>& values) {
    auto buffer = backend_.Allocate(std::max<size_t>(1, values.size()) * sizeof(T));
    EXPECT_TRUE(buffer.ok());
    backend_.CopyToDevice((*buffer)->data(), values.data(), values.size() * sizeof(T));
    T* data = static_cast<T*>((*buffer)->data());
    buffers_.push_back(std::move(buffer).value());
    return data;
  }
  float* Zeros(size_t count) { return Upload(std::vector<float>(count, 0.0f)); }
  std::vector<float> Download(const float* device, size_t count) {
    std::vector<float> out(count);
    backend_.CopyToHost(out.data(), device, count * sizeof(float));
    return out;
  }
  std::vector<float> Random(size_t count, float mean = 0.0f) {
    std::normal_distribution<float> normal(mean, 1.0f);
    std::vector<float> v(count);
    for (float& x : v) x = normal(rng_);
    return v;
  }
  // Weight storage in `dtype` plus its exact F32 values.
  Weight MakeWeight(DType dtype, int64_t rows, int64_t cols, std::vector<float>& values) {
    values = Random(rows * cols);
    std::vector<uint8_t> bytes(values.size() * DTypeSize(dtype));
    for (size_t i = 0; i < values.size(); ++i) {
      if (dtype == DType::kF32) {
        std::memcpy(&bytes[i * 4], &values[i], 4);
      } else {
        const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(values[i]) : F32ToF16(values[i]);
        std::memcpy(&bytes[i * 2], &h, 2);
        values[i] = dtype == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
      }
    }
    const uint8_t* host = Upload(bytes);
    auto weight = backend_.ImportWeight(host, dtype, rows, cols);
    EXPECT_TRUE(weight.ok());
    return std::move(weight).value();
  }

  CpuBackend backend_;
  std::mt19937 rng_{77};
  std::vector<std::unique_ptr<DeviceBuffer>> buffers_;
};

TEST_F(CpuBackendTest, MatMulMatchesScalarForAllDtypesAndRowCounts) {
  for (bool avx512 : {true, false}) {
    CpuBackend backend(CpuBackendOptions{2, avx512});
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      // Row counts cover one and several groups of kernel rows, and (with the
      // AVX2 kernels, whose row limit is 64) the widen + sgemm path.
      for (int64_t n : {1, 3, 4, 5, 8, 9, 20, 70}) {
        for (auto [in, out] : {std::pair<int64_t, int64_t>{37, 5}, {64, 300}, {300, 129}}) {
          std::vector<float> w_values;
          const Weight w = MakeWeight(dtype, out, in, w_values);
          const std::vector<float> x = Random(n * in);
          const std::vector<float> bias = Random(out);
          float* y = Zeros(n * out);
          backend.MatMul(Upload(x), n, w, Upload(bias), y);
          const std::vector<float> got = Download(y, n * out);
          // With AVX512-BF16, BF16 weights meet x rounded to BF16.
          const bool rounded_x = backend.kernel_isa() == "avx512-bf16" && dtype == DType::kBF16;
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t o = 0; o < out; ++o) {
              double expected = bias[o];
              double magnitude = std::fabs(bias[o]);
              for (int64_t k = 0; k < in; ++k) {
                const float xv = rounded_x ? Bf16ToF32(F32ToBf16(x[i * in + k])) : x[i * in + k];
                expected += static_cast<double>(xv) * w_values[o * in + k];
                magnitude += std::fabs(xv * w_values[o * in + k]);
              }
              ASSERT_NEAR(got[i * out + o], expected, 1e-5 * magnitude + 1e-6)
                  << backend.kernel_isa() << " " << DTypeName(dtype) << " n " << n << " in " << in
                  << " out " << out;
            }
          }
        }
      }
    }
  }
}

// Batch invariance: up to the kernels' row limit, a row of y is summed in the
// same order however many rows share the product, so a sequence's logits do
// not depend on the batch it was scheduled in (bit for bit).
TEST_F(CpuBackendTest, MatMulRowsDoNotDependOnTheirBatch) {
  for (bool avx512 : {true, false}) {
    CpuBackend backend(CpuBackendOptions{2, avx512});
    for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
      const int64_t in = 200;
      const int64_t out = 150;
      std::vector<float> w_values;
      const Weight w = MakeWeight(dtype, out, in, w_values);
      for (int64_t n : {2, 5, 9, 33, 64}) {
        const std::vector<float> x = Random(n * in);
        float* y = Zeros(n * out);
        backend.MatMul(Upload(x), n, w, nullptr, y);
        const std::vector<float> batched = Download(y, n * out);
        for (int64_t i = 0; i < n; ++i) {
          const std::vector<float> row(x.begin() + i * in, x.begin() + (i + 1) * in);
          float* y_row = Zeros(out);
          backend.MatMul(Upload(row), 1, w, nullptr, y_row);
          const std::vector<float> alone = Download(y_row, out);
          ASSERT_EQ(std::vector<float>(batched.begin() + i * out, batched.begin() + (i + 1) * out),
                    alone)
              << backend.kernel_isa() << " " << DTypeName(dtype) << " n " << n << " row " << i;
        }
      }
    }
  }
}

TEST_F(CpuBackendTest, MatMulManyEqualsOneMatMulPerOutput) {
  for (int64_t n : {1, 2, 5, 9, 70}) {
    // Mixed dtypes and sizes: a large matrix (parallel chunks) beside small ones.
    const int64_t in = 96;
    std::vector<float> values;
    const Weight big = MakeWeight(DType::kBF16, 1500, in, values);
    const Weight small = MakeWeight(DType::kF32, 7, in, values);
    const Weight half = MakeWeight(DType::kF16, 40, in, values);
    const float* bias = Upload(Random(1500));
    const float* x = Upload(Random(n * in));
    std::vector<Backend::MatMulOutput> outputs = {{&big, bias, Zeros(n * 1500)},
                                                  {&small, nullptr, Zeros(n * 7)},
                                                  {&half, bias, Zeros(n * 40)}};
    backend_.MatMulMany(x, n, outputs);
    for (const auto& o : outputs) {
      float* expected = Zeros(n * o.w->rows);
      backend_.MatMul(x, n, *o.w, o.bias, expected);
      EXPECT_EQ(Download(o.y, n * o.w->rows), Download(expected, n * o.w->rows))
          << "n " << n << " rows " << o.w->rows;
    }
  }
}

TEST_F(CpuBackendTest, RmsNormAndFusedAddMatchScalar) {
  const int64_t n = 5;
  const int64_t d = 67;
  const std::vector<float> x = Random(n * d);
  const std::vector<float> delta = Random(n * d);
  const std::vector<float> weight = Random(d, 1.0f);
  const float eps = 1e-5f;
  float* out = Zeros(n * d);
  backend_.RmsNorm(Upload(x), n, d, Upload(weight), eps, out);
  float* residual = Upload(x);
  float* fused_out = Zeros(n * d);
  backend_.AddRmsNorm(residual, Upload(delta), n, d, Upload(weight), eps, fused_out);
  const std::vector<float> got = Download(out, n * d);
  const std::vector<float> got_residual = Download(residual, n * d);
  const std::vector<float> got_fused = Download(fused_out, n * d);
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0, ss_sum = 0;
    for (int64_t j = 0; j < d; ++j) {
      ss += x[i * d + j] * x[i * d + j];
      const double s = x[i * d + j] + delta[i * d + j];
      ss_sum += s * s;
    }
    const double scale = 1.0 / std::sqrt(ss / d + eps);
    const double scale_sum = 1.0 / std::sqrt(ss_sum / d + eps);
    for (int64_t j = 0; j < d; ++j) {
      const double s = x[i * d + j] + delta[i * d + j];
      EXPECT_NEAR(got[i * d + j], x[i * d + j] * scale * weight[j], 1e-5);
      EXPECT_NEAR(got_residual[i * d + j], s, 1e-6);
      EXPECT_NEAR(got_fused[i * d + j], s * scale_sum * weight[j], 1e-5);
    }
  }
}

TEST_F(CpuBackendTest, RopeRotatesHalvesByPositionAngle) {
  RopeParams params;
  params.head_dim = 12;
  params.theta = 10000.0f;
  const RopeTable table = BuildRopeTable(params, 40);
  const std::vector<float> inv_freq = RopeInverseFrequencies(params);
  const int64_t n = 3;
  const int32_t heads = 3;
  const std::vector<int32_t> positions = {0, 17, 39};
  const std::vector<float> x = Random(n * heads * 12);
  float* device = Upload(x);
  backend_.Rope(device, n, heads, 12, Upload(positions), Upload(table.cos), Upload(table.sin));
  const std::vector<float> got = Download(device, x.size());
  for (int64_t t = 0; t < n; ++t) {
    for (int h = 0; h < heads; ++h) {
      const float* in = &x[(t * heads + h) * 12];
      const float* res = &got[(t * heads + h) * 12];
      for (int i = 0; i < 6; ++i) {
        const double angle = positions[t] * static_cast<double>(inv_freq[i]);
        EXPECT_NEAR(res[i], in[i] * std::cos(angle) - in[i + 6] * std::sin(angle), 1e-4);
        EXPECT_NEAR(res[i + 6], in[i + 6] * std::cos(angle) + in[i] * std::sin(angle), 1e-4);
      }
    }
  }
}

TEST_F(CpuBackendTest, ElementwiseOpsMatchScalar) {
  const int64_t count = 40000;  // several threads' worth
  const std::vector<float> a = Random(count);
  const std::vector<float> b = Random(count);
  float* out = Zeros(count);
  backend_.SiluMul(Upload(a), Upload(b), count, out);
  std::vector<float> got = Download(out, count);
  for (int64_t i = 0; i < count; ++i) {
    ASSERT_NEAR(got[i], a[i] / (1.0 + std::exp(-a[i])) * b[i], 1e-5 * (1 + std::fabs(got[i])));
  }
  backend_.Add(Upload(a), Upload(b), count, out);
  got = Download(out, count);
  for (int64_t i = 0; i < count; ++i) ASSERT_FLOAT_EQ(got[i], a[i] + b[i]);
}

TEST_F(CpuBackendTest, EmbeddingOfAVocabularyShardGivesZeroRowsForOtherIds) {
  // The shard holds ids [20, 30); 19 and 30 belong to the neighbouring shards.
  std::vector<float> table_values;
  const Weight table = MakeWeight(DType::kBF16, 10, 7, table_values);
  const std::vector<int32_t> ids = {19, 20, 29, 30};
  float* out = Upload(std::vector<float>(4 * 7, 5.0f));  // stale values must be overwritten
  backend_.Embedding(table, /*first_id=*/20, Upload(ids), 4, out);
  const std::vector<float> got = Download(out, 4 * 7);
  for (int j = 0; j < 7; ++j) {
    EXPECT_EQ(got[0 * 7 + j], 0.0f);
    EXPECT_EQ(got[1 * 7 + j], table_values[0 * 7 + j]);
    EXPECT_EQ(got[2 * 7 + j], table_values[9 * 7 + j]);
    EXPECT_EQ(got[3 * 7 + j], 0.0f);
  }
}

TEST_F(CpuBackendTest, EmbeddingAndGatherRowsCopyTheRightRows) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<float> table_values;
    const Weight table = MakeWeight(dtype, 10, 13, table_values);
    const std::vector<int32_t> ids = {9, 0, 4, 4};
    float* out = Zeros(4 * 13);
    backend_.Embedding(table, /*first_id=*/0, Upload(ids), 4, out);
    const std::vector<float> got = Download(out, 4 * 13);
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 13; ++j) ASSERT_EQ(got[i * 13 + j], table_values[ids[i] * 13 + j]);
    }
  }
  const std::vector<float> src = Random(6 * 5);
  const std::vector<int32_t> rows = {5, 2};
  float* dst = Zeros(2 * 5);
  backend_.GatherRows(Upload(src), 5, Upload(rows), 2, dst);
  const std::vector<float> got = Download(dst, 10);
  for (int j = 0; j < 5; ++j) {
    EXPECT_EQ(got[j], src[25 + j]);
    EXPECT_EQ(got[5 + j], src[10 + j]);
  }
}

// Paged attention against dense causal attention per sequence: two sequences
// with scrambled block tables, one decoding after a cached context and one in
// a prefill chunk after a cached context, one decoding after a context of
// several blocks; GQA with groups of 1, 2 and 4; head sizes below, at and
// above a vector's width, odd block sizes.
TEST_F(CpuBackendTest, PagedAttentionMatchesDenseCausalAttention) {
  struct Shape {
    int32_t head_dim;
    int32_t block_size;
  };
  // Without the long prefill the batch is small enough to run on one thread;
  // with it, the work is shared by the pool's threads.
  for (const bool long_prefill : {false, true})
    for (const Shape shape : {Shape{10, 3}, Shape{8, 16}, Shape{3, 5}, Shape{64, 16}, Shape{17, 7}})
      for (int32_t kv_heads : {4, 2, 1}) {
        SCOPED_TRACE(testing::Message()
                     << "head_dim " << shape.head_dim << " block_size " << shape.block_size
                     << " kv_heads " << kv_heads << " long_prefill " << long_prefill);
        const int32_t head_dim = shape.head_dim;
        const int32_t block_size = shape.block_size;
        AttentionParams params;
        params.num_heads = 4;
        params.num_kv_heads = kv_heads;
        params.head_dim = head_dim;
        params.block_size = block_size;
        params.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        const int32_t num_blocks = 64;
        const int64_t kv_row = kv_heads * params.head_dim;
        const int64_t q_row = params.num_heads * params.head_dim;
        KvCacheLayer cache{Zeros(num_blocks * block_size * kv_row),
                           Zeros(num_blocks * block_size * kv_row)};

        struct Seq {
          int32_t cached;  // positions already in the cache
          int32_t new_tokens;
          std::vector<int32_t> blocks;
        };
        // Block tables scrambled, long enough for the smallest block size.
        std::vector<Seq> seqs = {
            {7, 1, {13, 2, 8}},
            {5, 6, {0, 19, 4, 11}},
            {45, 1, {39, 1, 30, 5, 22, 9, 27, 3, 36, 14, 25, 17, 33, 6, 21, 10}}};
        if (long_prefill) {
          seqs.push_back({2, 58, {52, 41, 60, 47, 44, 57, 40, 63, 49, 55,
                                  42, 58, 46, 61, 43, 50, 54, 45, 62, 48}});
        }
        // Dense K/V per sequence for the reference, [context, kv_row].
        std::vector<std::vector<float>> dense_k, dense_v;
        for (const Seq& s : seqs) {
          const int32_t context = s.cached + s.new_tokens;
          dense_k.push_back(Random(context * kv_row));
          dense_v.push_back(Random(context * kv_row));
          // The cached part goes in through AppendKv too, one call per sequence.
          std::vector<int32_t> slots;
          for (int32_t p = 0; p < s.cached; ++p)
            slots.push_back(s.blocks[p / block_size] * block_size + p % block_size);
          const std::vector<float> k(dense_k.back().begin(),
                                     dense_k.back().begin() + s.cached * kv_row);
          const std::vector<float> v(dense_v.back().begin(),
                                     dense_v.back().begin() + s.cached * kv_row);
          backend_.AppendKv(cache, params, Upload(k), Upload(v), Upload(slots), s.cached);
        }
        // The step: new tokens of both sequences, appended then attended.
        std::vector<float> step_k, step_v;
        std::vector<int32_t> slots, tables;
        std::vector<AttentionSequence> descriptors;
        int32_t first = 0;
        int32_t max_context = 0;
        for (size_t i = 0; i < seqs.size(); ++i) {
          const Seq& s = seqs[i];
          const int32_t context = s.cached + s.new_tokens;
          descriptors.push_back(
              {first, s.new_tokens, context, static_cast<int32_t>(tables.size())});
          tables.insert(tables.end(), s.blocks.begin(), s.blocks.end());
          for (int32_t p = s.cached; p < context; ++p) {
            slots.push_back(s.blocks[p / block_size] * block_size + p % block_size);
            step_k.insert(step_k.end(), dense_k[i].begin() + p * kv_row,
                          dense_k[i].begin() + (p + 1) * kv_row);
            step_v.insert(step_v.end(), dense_v[i].begin() + p * kv_row,
                          dense_v[i].begin() + (p + 1) * kv_row);
          }
          first += s.new_tokens;
          max_context = std::max(max_context, context);
        }
        const int32_t n = first;
        backend_.AppendKv(cache, params, Upload(step_k), Upload(step_v), Upload(slots), n);
        const std::vector<float> q = Random(n * q_row);
        AttentionBatch batch;
        batch.sequences = Upload(descriptors);
        batch.num_sequences = static_cast<int32_t>(descriptors.size());
        batch.block_tables = Upload(tables);
        batch.num_tokens = n;
        batch.max_context_len = max_context;
        float* out = Zeros(n * q_row);
        backend_.PagedAttention(Upload(q), batch, cache, params, out);
        const std::vector<float> got = Download(out, n * q_row);

        int32_t t = 0;
        for (size_t i = 0; i < seqs.size(); ++i) {
          for (int32_t j = 0; j < seqs[i].new_tokens; ++j, ++t) {
            const int32_t position = seqs[i].cached + j;
            for (int32_t h = 0; h < params.num_heads; ++h) {
              const int32_t g = h / (params.num_heads / kv_heads);
              std::vector<double> scores(position + 1);
              double max_score = -1e300;
              for (int32_t p = 0; p <= position; ++p) {
                double s = 0;
                for (int d = 0; d < head_dim; ++d) {
                  s += q[t * q_row + h * head_dim + d] * dense_k[i][p * kv_row + g * head_dim + d];
                }
                scores[p] = s * params.scale;
                max_score = std::max(max_score, scores[p]);
              }
              double sum = 0;
              for (double& s : scores) sum += (s = std::exp(s - max_score));
              for (int d = 0; d < head_dim; ++d) {
                double expected = 0;
                for (int32_t p = 0; p <= position; ++p) {
                  expected += scores[p] / sum * dense_v[i][p * kv_row + g * head_dim + d];
                }
                ASSERT_NEAR(got[t * q_row + h * head_dim + d], expected, 1e-5)
                    << "kv_heads " << kv_heads << " sequence " << i << " token " << j << " head "
                    << h;
              }
            }
          }
        }
      }
}

}  // namespace
}  // namespace strata::backend

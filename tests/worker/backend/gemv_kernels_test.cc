// GEMV kernels (both instruction sets) and conversions against scalar loops,
// over odd sizes and every weight dtype.
#include "worker/backend/cpu/gemv_kernels.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/worker/backend/random_matrix.h"

namespace strata::backend {
namespace {

using Kernel = void (*)(const GemvArgs&, int64_t, int64_t);

void CheckKernel(Kernel kernel, int64_t block) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t in : {1, 7, 15, 16, 17, 31, 32, 33, 64, 100, 257}) {
      for (int64_t n = 1; n <= kGemvMaxRows; ++n) {
        for (bool with_bias : {false, true}) {
          const int64_t out = 37;
          const RandomMatrix w = MakeRandomMatrix(dtype, out * in, rng);
          std::vector<float> x(n * in), bias(out), x_split(n * in);
          for (float& v : x) v = normal(rng);
          for (float& v : bias) v = normal(rng);
          for (int64_t j = 0; j < n; ++j) SplitEvenOdd(&x[j * in], in, block, &x_split[j * in]);
          const int64_t ldy = out + 3;
          std::vector<float> y(n * ldy, -7.0f);
          GemvArgs args;
          args.x = x.data();
          args.x_split = x_split.data();
          args.n = n;
          args.in = in;
          args.w = w.bytes.data();
          args.dtype = dtype;
          args.y = y.data();
          args.ldy = ldy;
          args.bias = with_bias ? bias.data() : nullptr;
          // Two calls over a split row range, as threads do; 21 = 2 * 8 + 5
          // rows exercise the multi-row and the single-row paths.
          kernel(args, 0, 21);
          kernel(args, 21, out);
          for (int64_t j = 0; j < n; ++j) {
            for (int64_t o = 0; o < out; ++o) {
              double expected = with_bias ? bias[o] : 0.0;
              double magnitude = std::fabs(expected);
              for (int64_t k = 0; k < in; ++k) {
                expected += static_cast<double>(x[j * in + k]) * w.widened[o * in + k];
                magnitude += std::fabs(x[j * in + k] * w.widened[o * in + k]);
              }
              ASSERT_NEAR(y[j * ldy + o], expected, 1e-5 * magnitude + 1e-6)
                  << "dtype " << DTypeName(dtype) << " in " << in << " n " << n << " row " << o;
            }
            for (int64_t o = out; o < ldy; ++o) ASSERT_EQ(y[j * ldy + o], -7.0f) << "wrote past";
          }
        }
      }
    }
  }
}

TEST(GemvKernelsTest, Avx2MatchesScalarLoops) { CheckKernel(&GemvAvx2, kSplitBlockAvx2); }

TEST(GemvKernelsTest, Avx512MatchesScalarLoops) {
  if (!CpuHasAvx512()) GTEST_SKIP() << "no AVX-512 on this CPU";
  CheckKernel(&GemvAvx512, kSplitBlockAvx512);
}

// The AVX512-BF16 kernel multiplies BF16 weights with x rounded to BF16: the
// reference rounds x the same way, so only F32 summation order differs.
TEST(GemvKernelsTest, Avx512Bf16MatchesScalarLoopsOnRoundedActivations) {
  if (!CpuHasAvx512Bf16()) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
  std::mt19937 rng(4321);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t in : {1, 7, 31, 32, 33, 64, 100, 257}) {
    for (int64_t n = 1; n <= kGemvMaxRows; ++n) {
      const int64_t out = 37;
      const RandomMatrix w = MakeRandomMatrix(DType::kBF16, out * in, rng);
      std::vector<float> x(n * in), bias(out);
      for (float& v : x) v = normal(rng);
      for (float& v : bias) v = normal(rng);
      std::vector<uint16_t> x_bf16(n * in);
      RoundToBf16(x.data(), n * in, x_bf16.data());
      const int64_t ldy = out + 3;
      std::vector<float> y(n * ldy, -7.0f);
      GemvArgs args;
      args.x = x.data();
      args.x_bf16 = x_bf16.data();
      args.n = n;
      args.in = in;
      args.w = w.bytes.data();
      args.dtype = DType::kBF16;
      args.y = y.data();
      args.ldy = ldy;
      args.bias = bias.data();
      GemvAvx512Bf16(args, 0, 21);
      GemvAvx512Bf16(args, 21, out);
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t o = 0; o < out; ++o) {
          double expected = bias[o];
          double magnitude = std::fabs(expected);
          for (int64_t k = 0; k < in; ++k) {
            const double rounded = Bf16ToF32(x_bf16[j * in + k]);
            expected += rounded * w.widened[o * in + k];
            magnitude += std::fabs(rounded * w.widened[o * in + k]);
          }
          ASSERT_NEAR(y[j * ldy + o], expected, 1e-5 * magnitude + 1e-6)
              << "in " << in << " n " << n << " row " << o;
        }
        for (int64_t o = out; o < ldy; ++o) ASSERT_EQ(y[j * ldy + o], -7.0f) << "wrote past";
      }
    }
  }
}

TEST(GemvKernelsTest, RoundToBf16RoundsToNearestEven) {
  const std::vector<float> x = {1.0f, 1.00390625f /* halfway: stays 1 */,
                                1.01171875f /* halfway: up to even */, -3.14159f, 0.0f};
  std::vector<uint16_t> out(x.size());
  RoundToBf16(x.data(), static_cast<int64_t>(x.size()), out.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(out[i], F32ToBf16(x[i])) << x[i];
  EXPECT_EQ(Bf16ToF32(out[1]), 1.0f);
  EXPECT_EQ(Bf16ToF32(out[2]), 1.015625f);
  // Long runs (the vector path and its scalar tail) round as the scalar does.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 100.0f);
  std::vector<float> many(1000 + 7);
  for (float& v : many) v = normal(rng);
  std::vector<uint16_t> rounded(many.size());
  RoundToBf16(many.data(), static_cast<int64_t>(many.size()), rounded.data());
  for (size_t i = 0; i < many.size(); ++i) ASSERT_EQ(rounded[i], F32ToBf16(many[i])) << many[i];
}

TEST(GemvKernelsTest, SplitEvenOddDealsEachFullBlock) {
  std::vector<float> x(37);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  std::vector<float> out(37, -1.0f);
  SplitEvenOdd(x.data(), 37, 16, out.data());
  const std::vector<float> expected_first = {0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15};
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + 16), expected_first);
  EXPECT_EQ(out[16], 16.0f);
  EXPECT_EQ(out[24], 17.0f);
  EXPECT_EQ(out[32], -1.0f);  // the partial block is left alone
}

}  // namespace
}  // namespace strata::backend

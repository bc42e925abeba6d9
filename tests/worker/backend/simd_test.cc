#include "worker/backend/cpu/simd.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace strata::backend::simd {
namespace {

TEST(SimdTest, ExpIsWithinAFewUlpOverTheFloatRange) {
  double worst = 0;
  for (float x = -87.0f; x < 88.5f; x += 0.0137f) {
    alignas(32) float lanes[8];
    for (int j = 0; j < 8; ++j) lanes[j] = x + j * 0.001f;
    _mm256_store_ps(lanes, Exp(_mm256_load_ps(lanes)));
    for (int j = 0; j < 8; ++j) {
      const double expected = std::exp(static_cast<double>(x + j * 0.001f));
      worst = std::max(worst, std::fabs(lanes[j] - expected) / expected);
    }
  }
  EXPECT_LT(worst, 4e-7);
  alignas(32) float extremes[8] = {-1000.0f, 1000.0f, 0.0f, -0.0f, 1.0f, -1.0f, 88.0f, -87.0f};
  _mm256_store_ps(extremes, Exp(_mm256_load_ps(extremes)));
  EXPECT_LT(extremes[0], 1e-37f);
  EXPECT_TRUE(std::isfinite(extremes[1]));
  EXPECT_FLOAT_EQ(extremes[2], 1.0f);
  EXPECT_FLOAT_EQ(extremes[3], 1.0f);
  EXPECT_NEAR(extremes[4], 2.7182818f, 1e-6);
  EXPECT_NEAR(extremes[5], 0.36787944f, 1e-7);
}

TEST(SimdTest, ExpShiftSumAndMaxHandleTails) {
  for (int n : {1, 7, 8, 9, 23}) {
    std::vector<float> v(n);
    for (int i = 0; i < n; ++i) v[i] = std::sin(i * 1.7f) * 5;
    std::vector<float> original = v;
    const float max_value = Max(v.data(), n);
    float expected_max = original[0];
    for (float x : original) expected_max = std::max(expected_max, x);
    EXPECT_EQ(max_value, expected_max);
    const float sum = ExpShiftSum(v.data(), max_value, n);
    double expected_sum = 0;
    for (int i = 0; i < n; ++i) {
      const double e = std::exp(static_cast<double>(original[i]) - max_value);
      EXPECT_NEAR(v[i], e, 1e-6 * e) << "n " << n << " i " << i;
      expected_sum += e;
    }
    EXPECT_NEAR(sum, expected_sum, 1e-6 * expected_sum);
  }
}

TEST(SimdTest, SiluMulMatchesScalarIncludingTail) {
  std::vector<float> x(13), up(13), out(13);
  for (int i = 0; i < 13; ++i) {
    x[i] = (i - 6) * 1.3f;
    up[i] = 0.5f + i;
  }
  SiluMul(x.data(), up.data(), out.data(), 13);
  for (int i = 0; i < 13; ++i) {
    const double expected = x[i] / (1.0 + std::exp(-static_cast<double>(x[i]))) * up[i];
    EXPECT_NEAR(out[i], expected, 1e-6 * std::fabs(expected) + 1e-7) << i;
  }
}

}  // namespace
}  // namespace strata::backend::simd

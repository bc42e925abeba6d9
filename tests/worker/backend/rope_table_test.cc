#include "worker/backend/rope_table.h"

#include <cmath>

#include "gtest/gtest.h"

namespace strata::backend {
namespace {

TEST(RopeTableTest, PlainFrequenciesFollowTheta) {
  RopeParams params;
  params.head_dim = 8;
  params.theta = 10000.0f;
  const std::vector<float> inv_freq = RopeInverseFrequencies(params);
  ASSERT_EQ(inv_freq.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(inv_freq[i], std::pow(10000.0, -2.0 * i / 8), 1e-7);
  }
  const RopeTable table = BuildRopeTable(params, 5);
  ASSERT_EQ(table.cos.size(), 20u);
  EXPECT_FLOAT_EQ(table.cos[0], 1.0f);
  EXPECT_FLOAT_EQ(table.sin[0], 0.0f);
  EXPECT_NEAR(table.cos[3 * 4 + 1], std::cos(3 * inv_freq[1]), 1e-6);
  EXPECT_NEAR(table.sin[4 * 4 + 2], std::sin(4 * inv_freq[2]), 1e-6);
}

// Llama 3.1 (factor 8, low 1, high 4, original context 8192): wavelengths
// below 2048 are kept, above 8192 divided by 8, between interpolated.
TEST(RopeTableTest, Llama3ScalingKeepsHighAndScalesLowFrequencies) {
  RopeParams params;
  params.head_dim = 128;
  params.theta = 500000.0f;
  RopeParams scaled = params;
  scaled.llama3_scaling = true;
  scaled.factor = 8.0f;
  scaled.low_freq_factor = 1.0f;
  scaled.high_freq_factor = 4.0f;
  scaled.original_max_position_embeddings = 8192;
  const std::vector<float> plain = RopeInverseFrequencies(params);
  const std::vector<float> llama3 = RopeInverseFrequencies(scaled);
  int kept = 0, divided = 0, smoothed = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * M_PI / plain[i];
    if (wavelen < 2048) {
      EXPECT_FLOAT_EQ(llama3[i], plain[i]);
      ++kept;
    } else if (wavelen > 8192) {
      EXPECT_FLOAT_EQ(llama3[i], plain[i] / 8);
      ++divided;
    } else {
      const double smooth = (8192 / wavelen - 1) / 3;
      EXPECT_NEAR(llama3[i], (1 - smooth) * plain[i] / 8 + smooth * plain[i], 1e-6 * plain[i]);
      ++smoothed;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smoothed, 0);
}

}  // namespace
}  // namespace strata::backend

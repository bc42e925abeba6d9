#include "worker/backend/convert.h"

#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/worker/backend/random_matrix.h"

namespace strata::backend {
namespace {

TEST(ConvertTest, WidenToF32MatchesScalarConversions) {
  std::mt19937 rng(5);
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t count : {1, 8, 13, 100}) {
      const RandomMatrix m = MakeRandomMatrix(dtype, count, rng);
      std::vector<float> out(count);
      WidenToF32(m.bytes.data(), dtype, count, out.data());
      EXPECT_EQ(out, m.widened) << DTypeName(dtype) << " " << count;
    }
  }
}

TEST(ConvertTest, NarrowFromF32RoundsLikeTheScalarConversions) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values = {0.0f,       -0.0f,    1.0f,
                               65504.0f,   70000.0f, 6e-8f,
                               3e-5f,      -1e-7f,   1.00048828125f /* F16 tie */,
                               1.00390625f /* BF16 tie */};
  for (int i = 0; i < 1000; ++i) values.push_back(normal(rng) * (i % 2 ? 1e-3f : 10.0f));
  std::vector<uint16_t> f16(values.size()), bf16(values.size());
  NarrowFromF32(values.data(), values.size(), DType::kF16, f16.data());
  NarrowFromF32(values.data(), values.size(), DType::kBF16, bf16.data());
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(f16[i], F32ToF16(values[i])) << values[i];
    ASSERT_EQ(bf16[i], F32ToBf16(values[i])) << values[i];
  }
  std::vector<float> copy(values.size());
  NarrowFromF32(values.data(), values.size(), DType::kF32, copy.data());
  EXPECT_EQ(copy, values);
}

}  // namespace
}  // namespace strata::backend

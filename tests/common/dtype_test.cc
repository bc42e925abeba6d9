#include "common/dtype.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace strata {
namespace {

TEST(DTypeTest, ParsesSafetensorsAndTorchSpellings) {
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("bfloat16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("float16"), DType::kF16);
  EXPECT_EQ(*ParseDType("F32"), DType::kF32);
  EXPECT_FALSE(ParseDType("I8").ok());
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f)), 1.0f);
  EXPECT_EQ(Bf16ToF32(F32ToBf16(-3.5f)), -3.5f);
  // 1 + 2^-8 is halfway between two bf16 values; ties go to the even one (1.0).
  EXPECT_EQ(Bf16ToF32(F32ToBf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DTypeTest, F16RoundTripsEveryHalfValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t half = static_cast<uint16_t>(h);
    const float f = F16ToF32(half);
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToF16(f), half) << "half bits " << h;
  }
}

TEST(DTypeTest, F16ConvertsKnownValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);  // rounds past the largest half: inf
  EXPECT_EQ(F32ToF16(1e-9f), 0x0000);
}

}  // namespace
}  // namespace strata

// Random weight matrices for backend tests: the bytes as a checkpoint stores
// them in a given dtype, and the same values widened to F32 for scalar checks.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/dtype.h"

namespace strata::backend {

struct RandomMatrix {
  std::vector<uint8_t> bytes;  // as stored
  std::vector<float> widened;  // the same values in F32
};

// `count` values drawn from N(0, 1), rounded to `dtype`.
inline RandomMatrix MakeRandomMatrix(DType dtype, int64_t count, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  RandomMatrix m;
  m.bytes.resize(count * DTypeSize(dtype));
  m.widened.resize(count);
  for (int64_t i = 0; i < count; ++i) {
    const float v = normal(rng);
    if (dtype == DType::kF32) {
      std::memcpy(&m.bytes[i * 4], &v, 4);
      m.widened[i] = v;
    } else {
      const uint16_t h = dtype == DType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
      std::memcpy(&m.bytes[i * 2], &h, 2);
      m.widened[i] = dtype == DType::kBF16 ? Bf16ToF32(h) : F16ToF32(h);
    }
  }
  return m;
}

}  // namespace strata::backend

// Element types of weights and activations, and scalar conversions between them.
//
// BF16 and F16 weights stay in their file format in memory; kernels widen them
// to F32 as they read. These scalar helpers are the reference conversions that
// vectorised kernels must agree with.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata {

enum class DType : uint8_t { kF32, kF16, kBF16 };

size_t DTypeSize(DType dtype);
std::string_view DTypeName(DType dtype);  // "F32", "F16", "BF16" (safetensors spelling)
// Accepts the safetensors spelling and the config.json "torch_dtype" spelling
// ("float32", "float16", "bfloat16"), case-insensitive.
absl::StatusOr<DType> ParseDType(std::string_view name);

inline float Bf16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t v);
uint16_t F32ToF16(float f);

}  // namespace strata

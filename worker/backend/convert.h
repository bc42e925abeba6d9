// Vectorised conversions between F32 and the weight dtypes, for loading
// (dtype conversion, random weights) and for kernels that widen tiles. They
// agree exactly with the scalar reference conversions of common/dtype.h.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace strata::backend {

// dst[i] = float(src[i]) for i < count.
void WidenToF32(const void* src, DType dtype, int64_t count, float* dst);
// dst[i] = src[i] rounded to `dtype` (nearest even, as F32ToBf16 / F32ToF16).
void NarrowFromF32(const float* src, int64_t count, DType dtype, void* dst);

}  // namespace strata::backend

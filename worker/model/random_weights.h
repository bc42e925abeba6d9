// Seeded random tensor contents for --random-weights: benchmarks and tests
// on model shapes that are not downloaded.
//
// Values are approximately normal (an Irwin-Hall sum of four uniforms, which
// matches the mean and standard deviation and is bounded at ±3.46 sigma) and
// depend only on (seed, stream, element index): the same seed gives the same
// weights whatever the thread count.
//
// Thread-safety: pure functions; FillRandom uses its own threads.
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace strata::model {

// dst[0, count) in `dtype`, drawn around `mean` with standard deviation
// `stddev`, using up to `num_threads` threads (0: all cores).
void FillRandom(void* dst, DType dtype, int64_t count, float mean, float stddev, uint64_t seed,
                uint64_t stream, int num_threads);

}  // namespace strata::model

#include "worker/model/random_weights.h"

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

#include "worker/backend/convert.h"

namespace strata::model {
namespace {

constexpr int64_t kChunk = 1 << 16;  // elements per independently seeded chunk

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void FillChunk(void* dst, DType dtype, int64_t begin, int64_t end, float mean, float stddev,
               uint64_t seed, uint64_t stream) {
  // Sum of four 16-bit uniforms: mean 4 * 32767.5, standard deviation
  // sqrt(4 * (65536^2 - 1) / 12).
  constexpr float kSumMean = 4 * 32767.5f;
  constexpr float kSumInvStd = 1.0f / 37837.23f;
  uint64_t state = seed ^ (stream * 0xd1b54a32d192ed03ull) ^
                   (static_cast<uint64_t>(begin) * 0x9e3779b97f4a7c15ull);
  SplitMix64(state);
  const float scale = stddev * kSumInvStd;
  for (int64_t i = begin; i < end; ++i) {
    const uint64_t r = SplitMix64(state);
    const float sum =
        static_cast<float>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
    const float value = mean + (sum - kSumMean) * scale;
    switch (dtype) {
      case DType::kF32:
        static_cast<float*>(dst)[i] = value;
        break;
      case DType::kF16:
        static_cast<uint16_t*>(dst)[i] = F32ToF16(value);
        break;
      case DType::kBF16:
        static_cast<uint16_t*>(dst)[i] = F32ToBf16(value);
        break;
    }
  }
}

}  // namespace

void FillRandom(void* dst, DType dtype, int64_t count, float mean, float stddev, uint64_t seed,
                uint64_t stream, int num_threads) {
  if (count <= 0) return;
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  const int64_t chunks = (count + kChunk - 1) / kChunk;
  const int threads = static_cast<int>(std::min<int64_t>(num_threads, chunks));
  auto work = [&](int t) {
    for (int64_t c = t; c < chunks; c += threads) {
      const int64_t begin = c * kChunk;
      FillChunk(dst, dtype, begin, std::min(count, begin + kChunk), mean, stddev, seed, stream);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
}

}  // namespace strata::model

#include "worker/backend/rope_table.h"

#include <cmath>
#include <numbers>

namespace strata::backend {

std::vector<float> RopeInverseFrequencies(const RopeParams& params) {
  const int32_t half = params.head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int32_t i = 0; i < half; ++i) {
    inv_freq[i] = 1.0f / std::pow(params.theta,
                                  static_cast<float>(2 * i) / static_cast<float>(params.head_dim));
  }
  if (!params.llama3_scaling) return inv_freq;
  const float old_context = static_cast<float>(params.original_max_position_embeddings);
  const float low_freq_wavelen = old_context / params.low_freq_factor;
  const float high_freq_wavelen = old_context / params.high_freq_factor;
  for (float& f : inv_freq) {
    const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
    if (wavelen > low_freq_wavelen) {
      f = f / params.factor;
    } else if (wavelen >= high_freq_wavelen) {
      // Medium frequencies: interpolate between scaled and unscaled.
      const float smooth = (old_context / wavelen - params.low_freq_factor) /
                           (params.high_freq_factor - params.low_freq_factor);
      f = (1.0f - smooth) * f / params.factor + smooth * f;
    }
  }
  return inv_freq;
}

RopeTable BuildRopeTable(const RopeParams& params, int32_t max_positions) {
  const std::vector<float> inv_freq = RopeInverseFrequencies(params);
  const size_t half = inv_freq.size();
  RopeTable table;
  table.cos.resize(static_cast<size_t>(max_positions) * half);
  table.sin.resize(static_cast<size_t>(max_positions) * half);
  for (int32_t pos = 0; pos < max_positions; ++pos) {
    for (size_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[i];
      table.cos[pos * half + i] = std::cos(angle);
      table.sin[pos * half + i] = std::sin(angle);
    }
  }
  return table;
}

}  // namespace strata::backend

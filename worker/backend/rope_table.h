// Rotary position embedding tables: inverse frequencies (with Llama 3.1's
// "llama3" frequency scaling) and the cos/sin tables the Rope op reads.
// Pure functions, shared by every backend.
#pragma once

#include <cstdint>
#include <vector>

namespace strata::backend {

struct RopeParams {
  int32_t head_dim = 0;  // rotary dimension; even
  float theta = 10000.0f;
  // Llama 3.1 "llama3" scaling: long wavelengths divided by `factor`, short
  // ones kept, a smooth ramp between (as transformers' rope_init_fn does).
  bool llama3_scaling = false;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int32_t original_max_position_embeddings = 8192;
};

// inv_freq[i] = theta^(-2i / head_dim), then llama3 scaling when enabled.
// Computed in float, as llama2.c and transformers do. Size head_dim / 2.
std::vector<float> RopeInverseFrequencies(const RopeParams& params);

// cos and sin of position · inv_freq[i] for positions [0, max_positions):
// each [max_positions, head_dim / 2], row-major.
struct RopeTable {
  std::vector<float> cos;
  std::vector<float> sin;
};
RopeTable BuildRopeTable(const RopeParams& params, int32_t max_positions);

}  // namespace strata::backend

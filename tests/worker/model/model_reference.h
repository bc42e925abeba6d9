// The bundled model's reference outputs (STRATA_MODEL_DIR/reference.json) as
// model-level tests read them: prompt ids, greedy ids, first-step logits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace strata::model::testing {

struct ReferenceCase {
  std::string prompt;
  int steps = 0;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  std::vector<float> first_step_logits;
};

std::vector<ReferenceCase> ReadReference();

// The ids the reference stops on (BOS and EOS of the bundled model).
inline bool IsStop(int32_t id) { return id == 1 || id == 2; }

}  // namespace strata::model::testing

// The bundled model's reference outputs (models/<model>/reference.json) and
// how to ask a server for them, shared by the integration tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "strata/v1/inference.pb.h"

namespace strata::testing {

struct ReferenceCase {
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  std::string stop_reason;
  std::string completion_text;
  int steps = 0;
};

// The cases of STRATA_MODEL_DIR/reference.json.
std::vector<ReferenceCase> LoadReference();

// What one Generate call streamed.
struct Generation {
  absl::Status status;
  std::string text;
  std::vector<int32_t> ids;
  v1::GenerateResponse last;
  int responses = 0;
};

Generation Generate(const std::string& address, const v1::GenerateRequest& request);

// The request that reproduces a reference case: greedy, as many steps as
// run.c took, token ids back (the prompt is left to the caller).
v1::GenerateRequest ReferenceRequest(const ReferenceCase& reference);

// The ids a server streams for a reference case: run.c includes the BOS it
// stopped on; the server stops on it (an EOS id of the model) without
// streaming it.
std::vector<int32_t> ExpectedIds(const ReferenceCase& reference);

}  // namespace strata::testing

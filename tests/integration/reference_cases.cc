#include "tests/integration/reference_cases.h"

#include <chrono>
#include <fstream>

#include "cli/inference_client.h"
#include "nlohmann/json.hpp"

namespace strata::testing {

std::vector<ReferenceCase> LoadReference() {
  std::ifstream in(std::string(STRATA_MODEL_DIR) + "/reference.json");
  const nlohmann::json reference = nlohmann::json::parse(in);
  std::vector<ReferenceCase> cases;
  for (const auto& entry : reference["prompts"]) {
    cases.push_back({entry["prompt"], entry["prompt_ids"], entry["generated_ids"],
                     entry["stop_reason"], entry["completion_text"], entry["steps"]});
  }
  return cases;
}

Generation Generate(const std::string& address, const v1::GenerateRequest& request) {
  cli::InferenceClient client(address, std::chrono::seconds(120));
  Generation generation;
  generation.status = client.Generate(request, [&](const v1::GenerateResponse& response) {
    generation.text += response.text();
    generation.ids.insert(generation.ids.end(), response.token_ids().begin(),
                          response.token_ids().end());
    generation.last = response;
    ++generation.responses;
  });
  return generation;
}

// The request that reproduces a reference case: greedy, as many steps as
// run.c took, token ids back.
v1::GenerateRequest ReferenceRequest(const ReferenceCase& reference) {
  v1::GenerateRequest request;
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_stopping()->set_max_tokens(reference.steps -
                                             static_cast<int>(reference.prompt_ids.size()) + 1);
  request.mutable_options()->set_return_token_ids(true);
  return request;
}

// The ids a server streams for a reference case: run.c includes the BOS it
// stopped on; the server stops on it (an EOS id of the model) without
// streaming it.
std::vector<int32_t> ExpectedIds(const ReferenceCase& reference) {
  std::vector<int32_t> ids = reference.generated_ids;
  if (reference.stop_reason == "bos" && !ids.empty()) ids.pop_back();
  return ids;
}

}  // namespace strata::testing

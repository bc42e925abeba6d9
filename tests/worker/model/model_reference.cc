#include "tests/worker/model/model_reference.h"

#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"

namespace strata::model::testing {

std::vector<ReferenceCase> ReadReference() {
  std::ifstream in(std::string(STRATA_MODEL_DIR) + "/reference.json");
  std::stringstream text;
  text << in.rdbuf();
  const auto json = nlohmann::json::parse(text.str());
  std::vector<ReferenceCase> cases;
  for (const auto& p : json.at("prompts")) {
    cases.push_back({p.at("prompt"), p.at("steps"), p.at("prompt_ids"), p.at("generated_ids"),
                     p.at("first_step_logits")});
  }
  return cases;
}

}  // namespace strata::model::testing

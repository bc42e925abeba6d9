// The special tokens a tokenizer.json post-processor puts around a single
// sequence when add_special_tokens is set: TemplateProcessing ("single"
// template), ByteLevel (nothing), RobertaProcessing / BertProcessing
// (cls ... sep) and Sequence of those.
//
// Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace strata::tokenizer {

struct SpecialTokenTemplate {
  std::vector<int32_t> prefix;  // ids before the sequence (BOS)
  std::vector<int32_t> suffix;  // ids after it (EOS, SEP)
};

// Parses the "post_processor" object (null: no special tokens).
// `token_to_id` resolves token strings named by Roberta/Bert processors.
absl::StatusOr<SpecialTokenTemplate> ParsePostProcessor(
    const nlohmann::json& config,
    const std::function<std::optional<int32_t>(std::string_view)>& token_to_id,
    const std::string& where);

}  // namespace strata::tokenizer

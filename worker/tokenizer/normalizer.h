// Normalizers: rewrite text before pre-tokenization, as Hugging Face
// tokenizers' normalizers do. Supported tokenizer.json types: Sequence,
// Prepend, Replace (String or Regex pattern), NFC, NFD, Lowercase, Strip,
// StripAccents. NFKC/NFKD, BertNormalizer and Precompiled are refused at load.
//
// Thread-safety: immutable after construction; Normalize may run concurrently.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace strata::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` normalized. REQUIRES: `text` is valid UTF-8.
  virtual std::string Normalize(std::string text) const = 0;
};

// Builds the normalizer described by `config` (the "normalizer" object of
// tokenizer.json). `where` names the JSON location for error messages.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& config,
                                                            const std::string& where);

}  // namespace strata::tokenizer

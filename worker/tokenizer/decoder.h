// Decoders: turn the vocabulary strings of ids back into text, as Hugging
// Face tokenizers' decoders do. Supported tokenizer.json types: ByteLevel,
// Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, Sequence.
//
// Each decoder maps a list of token strings to a new list (DecodeChain); the
// text is the concatenation of what the last one returns.
//
// Thread-safety: immutable after construction; DecodeChain may run concurrently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace strata::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const = 0;
  // True when the text of `token` can still change with the tokens after it
  // (a ByteFallback "<0xXX>" piece, whose UTF-8 sequence later pieces
  // complete or invalidate).
  virtual bool JoinsFollowingTokens(const std::string& token) const = 0;
};

// Builds the decoder described by `config` (the "decoder" object of
// tokenizer.json). `where` names the JSON location for error messages.
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& config,
                                                      const std::string& where);

}  // namespace strata::tokenizer

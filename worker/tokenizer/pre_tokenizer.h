// Pre-tokenizers: split normalized text into the pieces ("words") the BPE
// model encodes one by one, as Hugging Face tokenizers' pre_tokenizers do.
// Supported tokenizer.json types: Sequence, Split (Regex or String pattern,
// all five behaviours, invert), ByteLevel, Digits, Punctuation, Metaspace,
// Whitespace, WhitespaceSplit, CharDelimiterSplit.
//
// Each stage splits every piece left by the stage before; empty pieces are
// dropped. ByteLevel also maps every UTF-8 byte to GPT-2's printable symbol,
// so later stages see the mapped text (this is what real files rely on).
//
// Thread-safety: immutable after construction; PreTokenize may run concurrently.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/regex.h"

namespace strata::tokenizer {

// A piece of text on its way to the model.
struct PreToken {
  std::string text;
  // True when the piece starts where the input text starts (Metaspace's
  // prepend_scheme "first" prepends only there).
  bool at_text_start = false;
};

// What a split does with the matches of its pattern (Hugging Face's
// SplitDelimiterBehavior).
enum class SplitBehavior {
  kRemoved,             // matches are dropped
  kIsolated,            // matches are pieces of their own
  kMergedWithPrevious,  // a match joins the piece before it
  kMergedWithNext,      // a match joins the piece after it
  kContiguous,          // consecutive matches form one piece
};

absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name);

// Cuts `text` at the matches of `regex` (non-matches when `invert`) and
// returns the [begin, end) byte ranges of the non-empty pieces.
std::vector<std::pair<size_t, size_t>> SplitRanges(std::string_view text, const Regex& regex,
                                                   SplitBehavior behavior, bool invert);

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by the pieces each one splits into, in order.
  virtual void PreTokenize(std::vector<PreToken>& pieces) const = 0;
};

// Builds the pre-tokenizer described by `config` (the "pre_tokenizer" object
// of tokenizer.json). `where` names the JSON location for error messages.
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& config,
                                                                const std::string& where);

}  // namespace strata::tokenizer

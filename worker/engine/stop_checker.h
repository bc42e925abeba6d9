// Decides when one sequence stops and which of its text may be streamed.
//
// Token-level stops are checked before a token's text counts: a stop token id
// (finish_reason stop) or an EOS id (finish_reason eos, unless ignore_eos)
// ends the sequence and the token's text is never emitted. Stop strings are
// checked on the final text: text from the first occurrence of a stop string
// on is never emitted, also when the stop string spans several tokens,
// because any tail of the text that could be the start of a stop string is
// held back until the next token decides it.
//
// Thread-safety: one StopChecker per sequence; not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "worker/engine/request.h"

namespace strata::engine {

class StopChecker {
 public:
  // `eos_token_ids` are ignored when stopping.ignore_eos. Empty stop strings
  // are not allowed (ValidateRequest refuses them).
  StopChecker(const StoppingCriteria& stopping, std::vector<int32_t> eos_token_ids);

  // kStop for a stop token id, kEos for an EOS id, else kNone.
  FinishReason CheckToken(int32_t token_id) const;

  struct TextResult {
    std::string text;      // may be streamed now
    bool stopped = false;  // a stop string occurred; nothing after it may be streamed
  };

  // Adds final text (as the streaming decoder produced it).
  // REQUIRES: not stopped yet.
  TextResult AddText(std::string_view text);

  // The sequence ends for another reason: adds the decoder's flushed `tail`
  // and releases everything held back, up to a stop string if one completes.
  TextResult Finish(std::string_view tail);

  // Bytes currently held back because they could start a stop string.
  size_t held_back_size() const { return held_.size(); }

 private:
  std::vector<std::string> stop_strings_;
  std::vector<int32_t> stop_token_ids_;
  std::vector<int32_t> eos_token_ids_;
  size_t longest_stop_ = 0;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace strata::engine

// Regular expressions for tokenizer.json patterns, on PCRE2 in UTF + UCP mode
// (JIT-compiled when available), made to behave like the Oniguruma engine
// Hugging Face tokenizers uses:
//  - `\s` / `\S` mean Unicode White_Space (PCRE2 would also count U+180E),
//    `\w` / `\W` mean letters, marks, decimal digits and connector punctuation;
//  - matches are found left to right without overlap, and an empty match
//    right where the previous match ended is skipped.
//
// Thread-safety: immutable after Compile(); FindAll may run concurrently.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::tokenizer {

class Regex {
 public:
  // Compiles `pattern` as a regular expression, or as literal text when
  // `literal` is true.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern, bool literal);

  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [begin, end) of the successive matches in `text`.
  // REQUIRES: `text` is valid UTF-8.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex(std::string pattern, void* code) : pattern_(std::move(pattern)), code_(code) {}

  std::string pattern_;
  void* code_;  // pcre2_code_8*, owned; null for the empty literal (no matches)
};

// `pattern` with the escapes whose meaning differs between PCRE2 and
// Oniguruma (\s, \S, \w, \W; \s and \w inside brackets too) spelled out as
// explicit classes. Exposed for tests.
std::string RewriteForPcre2(std::string_view pattern);

}  // namespace strata::tokenizer

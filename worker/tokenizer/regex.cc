#include "worker/tokenizer/regex.h"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

// Unicode White_Space, as Oniguruma's \s.
constexpr std::string_view kWhiteSpaceItems =
    R"(\t-\r\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";
// Oniguruma's \w: Letter | Mark | Decimal_Number | Connector_Punctuation.
constexpr std::string_view kWordItems = R"(\p{L}\p{M}\p{Nd}\p{Pc})";

pcre2_code* Code(void* code) { return static_cast<pcre2_code*>(code); }

// One match-data block per thread, enough for the whole-match offsets.
pcre2_match_data* ThreadMatchData() {
  struct Holder {
    pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
    ~Holder() { pcre2_match_data_free(data); }
  };
  thread_local Holder holder;
  return holder.data;
}

}  // namespace

std::string RewriteForPcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  bool in_class = false;
  size_t i = 0;
  while (i < pattern.size()) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char escaped = pattern[i + 1];
      if (escaped == 'Q') {  // \Q...\E: copied verbatim
        const size_t end = pattern.find("\\E", i + 2);
        const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
        out.append(pattern.substr(i, stop - i));
        i = stop;
        continue;
      }
      if (!in_class && (escaped == 's' || escaped == 'S')) {
        absl::StrAppend(&out, escaped == 's' ? "[" : "[^", std::string(kWhiteSpaceItems), "]");
      } else if (!in_class && (escaped == 'w' || escaped == 'W')) {
        absl::StrAppend(&out, escaped == 'w' ? "[" : "[^", std::string(kWordItems), "]");
      } else if (in_class && escaped == 's') {
        out.append(kWhiteSpaceItems);
      } else if (in_class && escaped == 'w') {
        out.append(kWordItems);
      } else {
        out.append(pattern.substr(i, 2));
      }
      i += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      ++i;
      // A ']' right after '[' or '[^' is a literal member.
      if (i < pattern.size() && pattern[i] == '^') out.push_back(pattern[i++]);
      if (i < pattern.size() && pattern[i] == ']') out.push_back(pattern[i++]);
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t end = pattern.find(":]", i + 2);  // POSIX class [:name:]
      if (end != std::string_view::npos) {
        out.append(pattern.substr(i, end + 2 - i));
        i = end + 2;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
    ++i;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern, bool literal) {
  // An empty literal matches nowhere (Hugging Face's rule for an empty String pattern).
  if (literal && pattern.empty()) return std::unique_ptr<Regex>(new Regex("", nullptr));
  const std::string source = literal ? std::string(pattern) : RewriteForPcre2(pattern);
  // Oniguruma's default (Ruby) syntax treats ^ and $ as line anchors.
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   options, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("invalid regex \"", std::string(pattern),
                                                   "\" at offset ", error_offset, ": ",
                                                   reinterpret_cast<const char*>(message)));
  }
  // JIT is an optimisation: without it (unsupported CPU, no executable
  // memory) matching falls back to the interpreter.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Regex>(new Regex(std::string(pattern), code));
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(Code(code_));
}

std::vector<std::pair<size_t, size_t>> Regex::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  if (code_ == nullptr) return matches;
  pcre2_match_data* match_data = ThreadMatchData();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;
  size_t last_match_end = std::string_view::npos;
  while (search_from <= text.size()) {
    int rc = pcre2_match(Code(code_), subject, text.size(), search_from, PCRE2_NO_UTF_CHECK,
                         match_data, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // The JIT stack ran out (a very long run for a backtracking pattern):
      // the interpreter keeps its backtracking state on the heap.
      rc = pcre2_match(Code(code_), subject, text.size(), search_from,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match_data, nullptr);
    }
    if (rc < 0) break;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (begin == end && end == last_match_end) {
      // An empty match where the last one ended: try again one character on.
      search_from += search_from < text.size() ? Utf8SequenceLength(text, search_from) : 1;
      continue;
    }
    matches.emplace_back(begin, end);
    search_from = end;
    last_match_end = end;
  }
  return matches;
}

}  // namespace strata::tokenizer

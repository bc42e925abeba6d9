#include "worker/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/tokenizer/json_fields.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

using nlohmann::json;

// GPT-2's split regex (openai/gpt-2 encoder.py; tokenizers byte_level.rs).
constexpr std::string_view kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// One punctuation character: ASCII punctuation or Unicode category P*.
constexpr std::string_view kPunctuationRegex = R"([\p{P}!-/:-@\[-`{-~])";

// A piece of a split: byte range and whether the behaviour dropped it.
struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// Calls `split(piece)` on every piece and replaces it by the ranges returned
// (ranges into piece.text; empty ones dropped).
template <typename SplitFn>
void SplitEach(std::vector<PreToken>& pieces, SplitFn split) {
  std::vector<PreToken> out;
  out.reserve(pieces.size() * 2);
  for (PreToken& piece : pieces) {
    for (const auto& [begin, end] : split(piece)) {
      if (begin == end) continue;
      out.push_back(
          PreToken{piece.text.substr(begin, end - begin), piece.at_text_start && begin == 0});
    }
  }
  pieces = std::move(out);
}

// Splits with a pattern and behaviour: Split, Digits, Punctuation,
// Whitespace, WhitespaceSplit, CharDelimiterSplit.
class PatternSplitPreTokenizer final : public PreTokenizer {
 public:
  PatternSplitPreTokenizer(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}

  void PreTokenize(std::vector<PreToken>& pieces) const override {
    SplitEach(pieces, [&](const PreToken& piece) {
      return SplitRanges(piece.text, *regex_, behavior_, invert_);
    });
  }

 private:
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

// ByteLevel: optional prefix space, optional GPT-2 split, then each byte
// becomes its printable symbol.
class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> split_regex)
      : add_prefix_space_(add_prefix_space), split_regex_(std::move(split_regex)) {
    for (int b = 0; b < 256; ++b) AppendUtf8(ByteToSymbol()[b], symbol_[b]);
  }

  void PreTokenize(std::vector<PreToken>& pieces) const override {
    if (add_prefix_space_) {
      for (PreToken& piece : pieces) {
        if (piece.text.empty() || piece.text[0] != ' ') piece.text = " " + piece.text;
      }
    }
    if (split_regex_ != nullptr) {
      SplitEach(pieces, [&](const PreToken& piece) {
        return SplitRanges(piece.text, *split_regex_, SplitBehavior::kIsolated, false);
      });
    }
    for (PreToken& piece : pieces) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (char c : piece.text) mapped.append(symbol_[static_cast<unsigned char>(c)]);
      piece.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> split_regex_;  // null: no split (use_regex false)
  std::array<std::string, 256> symbol_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

// Metaspace: spaces become the replacement character, which is prepended per
// the scheme; with `split`, each replacement starts a new piece.
class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme,
                        std::unique_ptr<Regex> split_regex)
      : replacement_(std::move(replacement)),
        scheme_(scheme),
        split_regex_(std::move(split_regex)) {}

  void PreTokenize(std::vector<PreToken>& pieces) const override {
    for (PreToken& piece : pieces) {
      std::string replaced;
      replaced.reserve(piece.text.size() + replacement_.size());
      for (char c : piece.text) {
        if (c == ' ') {
          replaced.append(replacement_);
        } else {
          replaced.push_back(c);
        }
      }
      const bool prepend = scheme_ == PrependScheme::kAlways ||
                           (scheme_ == PrependScheme::kFirst && piece.at_text_start);
      if (prepend && !replaced.starts_with(replacement_)) replaced = replacement_ + replaced;
      piece.text = std::move(replaced);
    }
    if (split_regex_ != nullptr) {
      SplitEach(pieces, [&](const PreToken& piece) {
        return SplitRanges(piece.text, *split_regex_, SplitBehavior::kMergedWithNext, false);
      });
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  std::unique_ptr<Regex> split_regex_;  // the replacement as a literal; null: no split
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> stages)
      : stages_(std::move(stages)) {}

  void PreTokenize(std::vector<PreToken>& pieces) const override {
    for (const auto& stage : stages_) stage->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> stages_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePatternSplit(std::string_view pattern,
                                                               bool literal, SplitBehavior behavior,
                                                               bool invert) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Regex> regex, Regex::Compile(pattern, literal));
  return std::make_unique<PatternSplitPreTokenizer>(std::move(regex), behavior, invert);
}

absl::StatusOr<SplitBehavior> BehaviorField(const json& config, SplitBehavior fallback,
                                            const std::string& where) {
  const json* field = FindField(config, "behavior");
  if (field == nullptr) return fallback;
  if (!field->is_string()) return FieldError(where, "behavior", "must be a string");
  absl::StatusOr<SplitBehavior> behavior = ParseSplitBehavior(field->get<std::string>());
  if (!behavior.ok()) {
    return FieldError(where, "behavior", std::string(behavior.status().message()));
  }
  return behavior;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParseMetaspace(const json& config,
                                                             const std::string& where) {
  STRATA_ASSIGN_OR_RETURN(std::string replacement,
                          OptionalString(config, "replacement", "\u2581", where));
  PrependScheme scheme = PrependScheme::kAlways;
  if (const json* field = FindField(config, "prepend_scheme"); field != nullptr) {
    const std::string name = field->is_string() ? field->get<std::string>() : "";
    if (name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      return FieldError(where, "prepend_scheme", "must be \"always\", \"first\" or \"never\"");
    }
  } else {
    // Files older than prepend_scheme say add_prefix_space instead.
    STRATA_ASSIGN_OR_RETURN(bool add_prefix_space,
                            OptionalBool(config, "add_prefix_space", true, where));
    scheme = add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
  }
  STRATA_ASSIGN_OR_RETURN(bool split, OptionalBool(config, "split", true, where));
  std::unique_ptr<Regex> split_regex;
  if (split) {
    STRATA_ASSIGN_OR_RETURN(split_regex, Regex::Compile(replacement, /*literal=*/true));
  }
  return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme,
                                                 std::move(split_regex));
}

}  // namespace

absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown split behavior \"", std::string(name), "\""));
}

std::vector<std::pair<size_t, size_t>> SplitRanges(std::string_view text, const Regex& regex,
                                                   SplitBehavior behavior, bool invert) {
  // Matches and the gaps between them, covering the whole text.
  std::vector<Span> spans;
  size_t previous = 0;
  for (const auto& [begin, end] : regex.FindAll(text)) {
    if (previous != begin) spans.push_back({previous, begin, false});
    spans.push_back({begin, end, true});
    previous = end;
  }
  if (previous != text.size()) spans.push_back({previous, text.size(), false});
  if (invert) {
    for (Span& span : spans) span.is_match = !span.is_match;
  }

  std::vector<std::pair<size_t, size_t>> pieces;
  pieces.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& span : spans) {
        if (!span.is_match) pieces.emplace_back(span.begin, span.end);
      }
      break;
    case SplitBehavior::kIsolated:
      for (const Span& span : spans) pieces.emplace_back(span.begin, span.end);
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& span : spans) {
        if (span.is_match && !previous_match && !pieces.empty()) {
          pieces.back().second = span.end;
        } else {
          pieces.emplace_back(span.begin, span.end);
        }
        previous_match = span.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // Mirror image of kMergedWithPrevious: walk from the end.
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !pieces.empty()) {
          pieces.back().first = it->begin;
        } else {
          pieces.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    case SplitBehavior::kContiguous:
      for (const Span& span : spans) {
        if (span.is_match == previous_match && !pieces.empty()) {
          pieces.back().second = span.end;
        } else {
          pieces.emplace_back(span.begin, span.end);
        }
        previous_match = span.is_match;
      }
      break;
  }
  return pieces;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const json& config,
                                                                const std::string& where) {
  STRATA_ASSIGN_OR_RETURN(std::string type, RequiredString(config, "type", where));
  if (type == "Sequence") {
    const json* list = FindField(config, "pretokenizers");
    if (list == nullptr || !list->is_array()) {
      return FieldError(where, "pretokenizers", "must be a list");
    }
    std::vector<std::unique_ptr<PreTokenizer>> stages;
    for (size_t i = 0; i < list->size(); ++i) {
      STRATA_ASSIGN_OR_RETURN(
          auto stage, ParsePreTokenizer((*list)[i], absl::StrCat(FieldPath(where, "pretokenizers"),
                                                                 "[", i, "]")));
      stages.push_back(std::move(stage));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(stages));
  }
  if (type == "Split") {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Regex> regex,
                            RequiredPattern(config, "pattern", where));
    STRATA_ASSIGN_OR_RETURN(SplitBehavior behavior,
                            BehaviorField(config, SplitBehavior::kIsolated, where));
    STRATA_ASSIGN_OR_RETURN(bool invert, OptionalBool(config, "invert", false, where));
    return std::make_unique<PatternSplitPreTokenizer>(std::move(regex), behavior, invert);
  }
  if (type == "ByteLevel") {
    STRATA_ASSIGN_OR_RETURN(bool add_prefix_space,
                            OptionalBool(config, "add_prefix_space", true, where));
    STRATA_ASSIGN_OR_RETURN(bool use_regex, OptionalBool(config, "use_regex", true, where));
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      STRATA_ASSIGN_OR_RETURN(regex, Regex::Compile(kGpt2SplitRegex, /*literal=*/false));
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
  }
  if (type == "Digits") {
    STRATA_ASSIGN_OR_RETURN(bool individual,
                            OptionalBool(config, "individual_digits", false, where));
    return MakePatternSplit(R"(\p{N})", false,
                            individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
                            false);
  }
  if (type == "Punctuation") {
    STRATA_ASSIGN_OR_RETURN(SplitBehavior behavior,
                            BehaviorField(config, SplitBehavior::kIsolated, where));
    return MakePatternSplit(kPunctuationRegex, false, behavior, false);
  }
  if (type == "Metaspace") return ParseMetaspace(config, where);
  if (type == "Whitespace") {
    return MakePatternSplit(R"(\w+|[^\w\s]+)", false, SplitBehavior::kRemoved, true);
  }
  if (type == "WhitespaceSplit") {
    return MakePatternSplit(R"(\s)", false, SplitBehavior::kRemoved, false);
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> stages;
    STRATA_ASSIGN_OR_RETURN(auto whitespace,
                            MakePatternSplit(R"(\s)", false, SplitBehavior::kRemoved, false));
    STRATA_ASSIGN_OR_RETURN(auto punctuation, MakePatternSplit(kPunctuationRegex, false,
                                                               SplitBehavior::kIsolated, false));
    stages.push_back(std::move(whitespace));
    stages.push_back(std::move(punctuation));
    return std::make_unique<SequencePreTokenizer>(std::move(stages));
  }
  if (type == "CharDelimiterSplit") {
    STRATA_ASSIGN_OR_RETURN(std::string delimiter, RequiredString(config, "delimiter", where));
    return MakePatternSplit(delimiter, true, SplitBehavior::kRemoved, false);
  }
  return FieldError(where, "type", absl::StrCat("unsupported pre-tokenizer \"", type, "\""));
}

}  // namespace strata::tokenizer

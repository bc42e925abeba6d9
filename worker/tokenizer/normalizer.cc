#include "worker/tokenizer/normalizer.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/tokenizer/json_fields.h"
#include "worker/tokenizer/regex.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

using nlohmann::json;

// `text` with every match of `regex` replaced by `content`.
std::string ReplaceAll(const std::string& text, const Regex& regex, const std::string& content) {
  const auto matches = regex.FindAll(text);
  if (matches.empty()) return text;
  std::string out;
  out.reserve(text.size());
  size_t previous = 0;
  for (const auto& [begin, end] : matches) {
    out.append(text, previous, begin - previous);
    out.append(content);
    previous = end;
  }
  out.append(text, previous, std::string::npos);
  return out;
}

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> stages)
      : stages_(std::move(stages)) {}
  std::string Normalize(std::string text) const override {
    for (const auto& stage : stages_) text = stage->Normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> stages_;
};

// Prepends to non-empty text only.
class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Normalize(std::string text) const override {
    if (!text.empty()) text = prefix_ + text;
    return text;
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string Normalize(std::string text) const override {
    return ReplaceAll(text, *pattern_, content_);
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class NfcNormalizer final : public Normalizer {
 public:
  std::string Normalize(std::string text) const override { return NormalizeNfc(text); }
};

class NfdNormalizer final : public Normalizer {
 public:
  std::string Normalize(std::string text) const override { return NormalizeNfd(text); }
};

class LowercaseNormalizer final : public Normalizer {
 public:
  std::string Normalize(std::string text) const override { return Lowercase(text); }
};

// Removes White_Space at the start and/or the end.
class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string Normalize(std::string text) const override {
    size_t begin = 0;
    size_t end = text.size();
    if (left_) {
      size_t pos = 0;
      while (pos < text.size()) {
        size_t next = pos;
        if (!IsWhiteSpace(NextCodePoint(text, next))) break;
        pos = next;
      }
      begin = pos;
    }
    if (right_) {
      size_t pos = begin;
      size_t last_non_space_end = begin;
      while (pos < text.size()) {
        if (!IsWhiteSpace(NextCodePoint(text, pos))) last_non_space_end = pos;
      }
      end = last_non_space_end;
    }
    return text.substr(begin, end - begin);
  }

 private:
  bool left_;
  bool right_;
};

// Removes combining marks, general category M (meant to follow NFD).
class StripAccentsNormalizer final : public Normalizer {
 public:
  explicit StripAccentsNormalizer(std::unique_ptr<Regex> marks) : marks_(std::move(marks)) {}
  std::string Normalize(std::string text) const override { return ReplaceAll(text, *marks_, ""); }

 private:
  std::unique_ptr<Regex> marks_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const json& config,
                                                            const std::string& where) {
  STRATA_ASSIGN_OR_RETURN(std::string type, RequiredString(config, "type", where));
  if (type == "Sequence") {
    const json* list = FindField(config, "normalizers");
    if (list == nullptr || !list->is_array()) {
      return FieldError(where, "normalizers", "must be a list");
    }
    std::vector<std::unique_ptr<Normalizer>> stages;
    for (size_t i = 0; i < list->size(); ++i) {
      STRATA_ASSIGN_OR_RETURN(
          auto stage,
          ParseNormalizer((*list)[i], absl::StrCat(FieldPath(where, "normalizers"), "[", i, "]")));
      stages.push_back(std::move(stage));
    }
    return std::make_unique<SequenceNormalizer>(std::move(stages));
  }
  if (type == "Prepend") {
    STRATA_ASSIGN_OR_RETURN(std::string prefix, RequiredString(config, "prepend", where));
    return std::make_unique<PrependNormalizer>(std::move(prefix));
  }
  if (type == "Replace") {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Regex> pattern,
                            RequiredPattern(config, "pattern", where));
    STRATA_ASSIGN_OR_RETURN(std::string content, RequiredString(config, "content", where));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern), std::move(content));
  }
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "NFD") return std::make_unique<NfdNormalizer>();
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    STRATA_ASSIGN_OR_RETURN(bool left, OptionalBool(config, "strip_left", true, where));
    STRATA_ASSIGN_OR_RETURN(bool right, OptionalBool(config, "strip_right", true, where));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "StripAccents") {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Regex> marks, Regex::Compile(R"(\p{M})", false));
    return std::make_unique<StripAccentsNormalizer>(std::move(marks));
  }
  return FieldError(where, "type", absl::StrCat("unsupported normalizer \"", type, "\""));
}

}  // namespace strata::tokenizer

#include "worker/tokenizer/decoder.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/tokenizer/json_fields.h"
#include "worker/tokenizer/regex.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

using nlohmann::json;

// Code points of valid UTF-8 `text`.
std::u32string CodePoints(std::string_view text) {
  std::u32string out;
  size_t pos = 0;
  while (pos < text.size()) out.push_back(NextCodePoint(text, pos));
  return out;
}

std::string FromCodePoints(const std::u32string& code_points, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) AppendUtf8(code_points[i], out);
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xXX>" piece, or -1. Follows Hugging Face, which parses XX
// with Rust's u8::from_str_radix (so "+A" is accepted too).
int BytePieceValue(const std::string& token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return -1;
  const char high = token[3];
  const char low = token[4];
  if (high == '+') return HexValue(low);
  const int h = HexValue(high);
  const int l = HexValue(low);
  return h < 0 || l < 0 ? -1 : h * 16 + l;
}

// Maps GPT-2 byte symbols back to bytes; a token with any other character
// stands for its own UTF-8 bytes. Invalid UTF-8 becomes U+FFFD.
class ByteLevelDecoder final : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      const size_t start = bytes.size();
      size_t pos = 0;
      bool all_symbols = true;
      while (pos < token.size()) {
        const int byte = SymbolToByte(NextCodePoint(token, pos));
        if (byte < 0) {
          all_symbols = false;
          break;
        }
        bytes.push_back(static_cast<char>(byte));
      }
      if (!all_symbols) {
        bytes.resize(start);
        bytes.append(token);
      }
    }
    return {Utf8Lossy(bytes)};
  }
  bool JoinsFollowingTokens(const std::string&) const override { return false; }
};

// Replacement characters become spaces; in the first token they are dropped
// unless the prepend scheme is "never" (Hugging Face's Metaspace decoder).
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string_view substitute = i == 0 && strip_first_ ? "" : " ";
      std::string out;
      size_t pos = 0;
      while (pos < tokens[i].size()) {
        if (tokens[i].compare(pos, replacement_.size(), replacement_) == 0) {
          out.append(substitute);
          pos += replacement_.size();
        } else {
          out.push_back(tokens[i][pos++]);
        }
      }
      tokens[i] = std::move(out);
    }
    return tokens;
  }
  bool JoinsFollowingTokens(const std::string&) const override { return false; }

 private:
  std::string replacement_;  // one character
  bool strip_first_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) {
      std::string out;
      size_t previous = 0;
      for (const auto& [begin, end] : pattern_->FindAll(token)) {
        out.append(token, previous, begin - previous);
        out.append(content_);
        previous = end;
      }
      out.append(token, previous, std::string::npos);
      token = std::move(out);
    }
    return tokens;
  }
  bool JoinsFollowingTokens(const std::string&) const override { return false; }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

// Consecutive "<0xXX>" pieces become the text of their bytes, or one U+FFFD
// per byte when those bytes are not valid UTF-8.
class ByteFallbackDecoder final : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (ValidUtf8PrefixLength(pending) == pending.size()) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (std::string& token : tokens) {
      const int byte = BytePieceValue(token);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    return out;
  }
  bool JoinsFollowingTokens(const std::string& token) const override {
    return BytePieceValue(token) >= 0;
  }
};

class FuseDecoder final : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::string joined;
    for (const std::string& token : tokens) joined.append(token);
    return {joined};
  }
  bool JoinsFollowingTokens(const std::string&) const override { return false; }
};

// Removes up to `start` leading and `stop` trailing `content` characters from
// each token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) {
      const std::u32string chars = CodePoints(token);
      size_t begin = 0;
      while (begin < start_ && begin < chars.size() && chars[begin] == content_) ++begin;
      size_t end = chars.size();
      for (size_t i = 0; i < stop_ && end > 0 && chars[end - 1] == content_; ++i) --end;
      token = begin < end ? FromCodePoints(chars, begin, end) : "";
    }
    return tokens;
  }
  bool JoinsFollowingTokens(const std::string&) const override { return false; }

 private:
  char32_t content_;
  size_t start_;
  size_t stop_;
};

// The end-of-word suffix becomes a space, except on the last token.
class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string_view replacement = i + 1 == tokens.size() ? "" : " ";
      if (suffix_.empty()) continue;
      std::string out;
      size_t previous = 0;
      for (size_t pos = tokens[i].find(suffix_); pos != std::string::npos;
           pos = tokens[i].find(suffix_, previous)) {
        out.append(tokens[i], previous, pos - previous);
        out.append(replacement);
        previous = pos + suffix_.size();
      }
      out.append(tokens[i], previous, std::string::npos);
      tokens[i] = std::move(out);
    }
    return tokens;
  }
  bool JoinsFollowingTokens(const std::string&) const override { return false; }

 private:
  std::string suffix_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> stages)
      : stages_(std::move(stages)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (const auto& stage : stages_) tokens = stage->DecodeChain(std::move(tokens));
    return tokens;
  }
  bool JoinsFollowingTokens(const std::string& token) const override {
    // Only the stages that see the vocabulary string itself can tell.
    for (const auto& stage : stages_) {
      if (stage->JoinsFollowingTokens(token)) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> stages_;
};

absl::StatusOr<std::string> SingleCharacter(const json& config, std::string_view key,
                                            std::string_view fallback, const std::string& where) {
  STRATA_ASSIGN_OR_RETURN(std::string text, OptionalString(config, key, fallback, where));
  if (text.empty() || Utf8SequenceLength(text, 0) != text.size()) {
    return FieldError(where, key, "must be one character");
  }
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const json& config,
                                                      const std::string& where) {
  STRATA_ASSIGN_OR_RETURN(std::string type, RequiredString(config, "type", where));
  if (type == "Sequence") {
    const json* list = FindField(config, "decoders");
    if (list == nullptr || !list->is_array()) {
      return FieldError(where, "decoders", "must be a list");
    }
    std::vector<std::unique_ptr<Decoder>> stages;
    for (size_t i = 0; i < list->size(); ++i) {
      STRATA_ASSIGN_OR_RETURN(
          auto stage,
          ParseDecoder((*list)[i], absl::StrCat(FieldPath(where, "decoders"), "[", i, "]")));
      stages.push_back(std::move(stage));
    }
    return std::make_unique<SequenceDecoder>(std::move(stages));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    STRATA_ASSIGN_OR_RETURN(std::string replacement,
                            SingleCharacter(config, "replacement", "\u2581", where));
    bool strip_first = true;
    if (const json* scheme = FindField(config, "prepend_scheme"); scheme != nullptr) {
      strip_first = !(scheme->is_string() && scheme->get<std::string>() == "never");
    } else {
      STRATA_ASSIGN_OR_RETURN(strip_first, OptionalBool(config, "add_prefix_space", true, where));
    }
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), strip_first);
  }
  if (type == "Replace") {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Regex> pattern,
                            RequiredPattern(config, "pattern", where));
    STRATA_ASSIGN_OR_RETURN(std::string content, RequiredString(config, "content", where));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), std::move(content));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    STRATA_ASSIGN_OR_RETURN(std::string content, SingleCharacter(config, "content", " ", where));
    STRATA_ASSIGN_OR_RETURN(int64_t start, OptionalInt(config, "start", 0, where));
    STRATA_ASSIGN_OR_RETURN(int64_t stop, OptionalInt(config, "stop", 0, where));
    if (start < 0 || stop < 0) return FieldError(where, "start", "start and stop must be >= 0");
    size_t pos = 0;
    return std::make_unique<StripDecoder>(NextCodePoint(content, pos), start, stop);
  }
  if (type == "BPEDecoder") {
    STRATA_ASSIGN_OR_RETURN(std::string suffix, OptionalString(config, "suffix", "</w>", where));
    return std::make_unique<BpeSuffixDecoder>(std::move(suffix));
  }
  return FieldError(where, "type", absl::StrCat("unsupported decoder \"", type, "\""));
}

}  // namespace strata::tokenizer

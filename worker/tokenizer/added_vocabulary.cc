#include "worker/tokenizer/added_vocabulary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/tokenizer/json_fields.h"
#include "worker/tokenizer/normalizer.h"
#include "worker/tokenizer/regex.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

using nlohmann::json;

// Letters, marks, decimal digits and connector punctuation (regex \w), which
// single_word tokens must not touch.
bool IsWordCharacterAt(std::string_view text, size_t begin, size_t end) {
  static const Regex* const word = Regex::Compile(R"(\A\w)", false)->release();
  const auto matches = word->FindAll(text.substr(begin, end - begin));
  return !matches.empty() && matches.front().first == 0;
}

bool EndsWithWordCharacter(std::string_view text) {
  if (text.empty()) return false;
  size_t begin = text.size() - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  return IsWordCharacterAt(text, begin, text.size());
}

bool StartsWithWordCharacter(std::string_view text) {
  if (text.empty()) return false;
  return IsWordCharacterAt(text, 0, Utf8SequenceLength(text, 0));
}

}  // namespace

void AddedVocabulary::Trie::Insert(std::string_view pattern, int32_t token_index) {
  int32_t node = 0;
  for (char c : pattern) {
    const auto byte = static_cast<unsigned char>(c);
    const auto it = nodes[node].children.find(byte);
    if (it != nodes[node].children.end()) {
      node = it->second;
      continue;
    }
    const auto child = static_cast<int32_t>(nodes.size());
    nodes[node].children.emplace(byte, child);
    nodes.emplace_back();
    node = child;
  }
  if (nodes[node].token_index == -1) nodes[node].token_index = token_index;
}

std::pair<int32_t, size_t> AddedVocabulary::Trie::LongestAt(std::string_view text,
                                                            size_t pos) const {
  std::pair<int32_t, size_t> best(-1, 0);
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto it = nodes[node].children.find(static_cast<unsigned char>(text[i]));
    if (it == nodes[node].children.end()) break;
    node = it->second;
    if (nodes[node].token_index != -1) best = {nodes[node].token_index, i + 1 - pos};
  }
  return best;
}

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const json& added_tokens,
                                                          const Normalizer* normalizer,
                                                          const std::string& where) {
  AddedVocabulary vocabulary;
  if (added_tokens.is_null()) return vocabulary;
  if (!added_tokens.is_array()) return FieldError(where, "", "must be a list");
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const std::string entry_where = absl::StrCat(where, "[", i, "]");
    const json& entry = added_tokens[i];
    AddedToken token;
    STRATA_ASSIGN_OR_RETURN(int64_t id, OptionalInt(entry, "id", -1, entry_where));
    if (id < 0 || id > INT32_MAX) return FieldError(entry_where, "id", "missing or not an id");
    token.id = static_cast<int32_t>(id);
    STRATA_ASSIGN_OR_RETURN(token.content, RequiredString(entry, "content", entry_where));
    if (token.content.empty()) return FieldError(entry_where, "content", "is empty");
    if (ValidUtf8PrefixLength(token.content) != token.content.size()) {
      return FieldError(entry_where, "content", "is not valid UTF-8");
    }
    STRATA_ASSIGN_OR_RETURN(token.single_word,
                            OptionalBool(entry, "single_word", false, entry_where));
    STRATA_ASSIGN_OR_RETURN(token.lstrip, OptionalBool(entry, "lstrip", false, entry_where));
    STRATA_ASSIGN_OR_RETURN(token.rstrip, OptionalBool(entry, "rstrip", false, entry_where));
    STRATA_ASSIGN_OR_RETURN(token.special, OptionalBool(entry, "special", false, entry_where));
    // Hugging Face's default: special tokens are matched in the raw text.
    STRATA_ASSIGN_OR_RETURN(token.normalized,
                            OptionalBool(entry, "normalized", !token.special, entry_where));
    if (vocabulary.id_by_content_.contains(token.content)) continue;

    const auto index = static_cast<int32_t>(vocabulary.tokens_.size());
    if (token.normalized) {
      const std::string pattern =
          normalizer != nullptr ? normalizer->Normalize(token.content) : token.content;
      if (!pattern.empty()) vocabulary.normalized_trie_.Insert(pattern, index);
    } else {
      vocabulary.raw_trie_.Insert(token.content, index);
    }
    vocabulary.id_by_content_.emplace(token.content, token.id);
    vocabulary.index_by_id_.emplace(token.id, index);
    if (token.special) vocabulary.special_contents_.insert(token.content);
    vocabulary.max_id_ = std::max(vocabulary.max_id_, token.id);
    vocabulary.tokens_.push_back(std::move(token));
  }
  return vocabulary;
}

std::vector<TextSegment> AddedVocabulary::Split(std::string_view text, bool raw) const {
  const Trie& trie = raw ? raw_trie_ : normalized_trie_;
  std::vector<TextSegment> segments;
  size_t segment_start = 0;
  size_t pos = 0;
  const auto& root_children = trie.nodes[0].children;
  while (!root_children.empty() && pos < text.size()) {
    // Leftmost match, then the longest one there.
    size_t match_begin = pos;
    std::pair<int32_t, size_t> match(-1, 0);
    for (; match_begin < text.size(); ++match_begin) {
      if (!root_children.contains(static_cast<unsigned char>(text[match_begin]))) continue;
      match = trie.LongestAt(text, match_begin);
      if (match.first != -1) break;
    }
    if (match.first == -1) break;
    const AddedToken& token = tokens_[match.first];
    size_t begin = match_begin;
    size_t end = match_begin + match.second;
    pos = end;  // the search goes on after the match, whatever becomes of it
    if (token.single_word && (EndsWithWordCharacter(text.substr(0, begin)) ||
                              StartsWithWordCharacter(text.substr(end)))) {
      continue;
    }
    if (token.lstrip) {
      size_t stripped = begin;
      while (stripped > segment_start) {
        size_t char_begin = stripped - 1;
        while (char_begin > 0 && (static_cast<unsigned char>(text[char_begin]) & 0xC0) == 0x80) {
          --char_begin;
        }
        size_t scan = char_begin;
        if (!IsWhiteSpace(NextCodePoint(text, scan))) break;
        stripped = char_begin;
      }
      begin = stripped;
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t scan = end;
        if (!IsWhiteSpace(NextCodePoint(text, scan))) break;
        end = scan;
      }
    }
    if (begin < segment_start) continue;  // overlaps what an rstrip swallowed
    if (segment_start < begin) segments.push_back({segment_start, begin, std::nullopt});
    segments.push_back({begin, end, token.id});
    segment_start = end;
  }
  if (segment_start < text.size() || segments.empty()) {
    segments.push_back({segment_start, text.size(), std::nullopt});
  }
  return segments;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  const auto it = index_by_id_.find(id);
  return it == index_by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::FindByContent(std::string_view content) const {
  const auto it = id_by_content_.find(absl::string_view(content.data(), content.size()));
  if (it == id_by_content_.end()) return std::nullopt;
  return it->second;
}

bool AddedVocabulary::IsSpecialContent(std::string_view content) const {
  return special_contents_.contains(absl::string_view(content.data(), content.size()));
}

}  // namespace strata::tokenizer

// The added tokens of a tokenizer.json ("added_tokens"): special tokens such
// as <s> or <|endoftext|> and extra tokens such as phi-2's runs of spaces.
// They are found in the text before anything else, leftmost-longest, and cut
// it: the text between them goes through the normalizer, pre-tokenizer and
// model; each added token becomes its id directly. Tokens marked
// "normalized": false are matched in the raw text; "normalized": true ones in
// the normalized text (Hugging Face's AddedVocabulary).
//
// Thread-safety: immutable after construction; all methods are const.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace strata::tokenizer {

class Normalizer;

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;  // match only when not inside a word
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool normalized = false;   // matched after normalization
  bool special = false;      // dropped by Decode(skip_special_tokens)
};

// A cut of the text: [begin, end) and the added token found there, if any.
struct TextSegment {
  size_t begin;
  size_t end;
  std::optional<int32_t> added_token_id;
};

class AddedVocabulary {
 public:
  // Parses the "added_tokens" list; `normalizer` (may be null) normalizes the
  // content of tokens marked normalized, as their matching text.
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& added_tokens,
                                                  const Normalizer* normalizer,
                                                  const std::string& where);

  // Cuts `text` at the tokens of one kind (raw: normalized=false ones;
  // otherwise normalized=true ones). Segments cover `text` in order; none is
  // empty unless `text` is.
  std::vector<TextSegment> Split(std::string_view text, bool raw) const;

  const AddedToken* FindById(int32_t id) const;
  std::optional<int32_t> FindByContent(std::string_view content) const;
  bool IsSpecialContent(std::string_view content) const;
  // Highest added id, or -1 when there are none.
  int32_t max_id() const { return max_id_; }

 private:
  // A byte trie of the token patterns of one kind.
  struct Trie {
    struct Node {
      absl::flat_hash_map<unsigned char, int32_t> children;
      int32_t token_index = -1;  // index into tokens_ of the pattern ending here
    };
    std::vector<Node> nodes{Node{}};
    void Insert(std::string_view pattern, int32_t token_index);
    // The longest pattern starting at text[pos]: (token index, length) or (-1, 0).
    std::pair<int32_t, size_t> LongestAt(std::string_view text, size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> index_by_id_;
  absl::flat_hash_map<std::string, int32_t> id_by_content_;
  absl::flat_hash_set<std::string> special_contents_;
  Trie raw_trie_;
  Trie normalized_trie_;
  int32_t max_id_ = -1;
};

}  // namespace strata::tokenizer

#include "worker/tokenizer/bpe_model.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/tokenizer/json_fields.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {
namespace {

using nlohmann::json;

absl::string_view AbslView(std::string_view text) { return {text.data(), text.size()}; }

// One symbol of a word being merged; a doubly linked list over a vector.
struct Symbol {
  int32_t id;
  int32_t prev;    // index of the previous live symbol, -1 at the start
  int32_t next;    // index of the next live symbol, -1 at the end
  int32_t length;  // bytes of the word it covers; 0 once merged into its left neighbour
};

// A pair waiting to be merged: lowest rank first, then leftmost.
struct PendingMerge {
  int32_t position;
  int32_t rank;
  int32_t new_id;
  bool operator<(const PendingMerge& other) const {  // "lower priority than"
    if (rank != other.rank) return rank > other.rank;
    return position > other.position;
  }
};

void AddSymbol(std::vector<Symbol>& symbols, int32_t id, int32_t length) {
  const auto index = static_cast<int32_t>(symbols.size());
  if (!symbols.empty()) symbols.back().next = index;
  symbols.push_back(Symbol{id, index - 1, -1, length});
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const json& model,
                                                             const std::string& where) {
  if (!model.is_object()) return FieldError(where, "", "must be an object");
  STRATA_ASSIGN_OR_RETURN(std::string type, OptionalString(model, "type", "BPE", where));
  if (type != "BPE") {
    return FieldError(where, "type",
                      absl::StrCat("unsupported model type \"", type, "\" (only BPE is)"));
  }
  const json* vocab = FindField(model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    return FieldError(where, "vocab", "must be an object of token -> id");
  }
  const json* merges = FindField(model, "merges");
  if (merges == nullptr || !merges->is_array()) {
    return FieldError(where, "merges", "must be a list");
  }

  auto bpe = std::unique_ptr<BpeModel>(new BpeModel());
  bpe->vocab_.reserve(vocab->size());
  for (const auto& [token, id_json] : vocab->items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
        id_json.get<int64_t>() > INT32_MAX) {
      return FieldError(where, "vocab", absl::StrCat("id of \"", token, "\" is not an id"));
    }
    const auto id = static_cast<int32_t>(id_json.get<int64_t>());
    bpe->vocab_[token] = id;
    if (static_cast<size_t>(id) >= bpe->id_to_token_.size()) {
      bpe->id_to_token_.resize(id + 1);
      bpe->has_token_.resize(id + 1, false);
    }
    bpe->id_to_token_[id] = token;
    bpe->has_token_[id] = true;
  }

  STRATA_ASSIGN_OR_RETURN(bpe->continuing_subword_prefix_,
                          OptionalString(model, "continuing_subword_prefix", "", where));
  STRATA_ASSIGN_OR_RETURN(bpe->end_of_word_suffix_,
                          OptionalString(model, "end_of_word_suffix", "", where));
  STRATA_ASSIGN_OR_RETURN(bpe->fuse_unk_, OptionalBool(model, "fuse_unk", false, where));
  STRATA_ASSIGN_OR_RETURN(bpe->byte_fallback_, OptionalBool(model, "byte_fallback", false, where));
  STRATA_ASSIGN_OR_RETURN(bpe->ignore_merges_, OptionalBool(model, "ignore_merges", false, where));
  if (const json* dropout = FindField(model, "dropout");
      dropout != nullptr && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return FieldError(where, "dropout", "BPE dropout is for training; it must be null");
  }
  STRATA_ASSIGN_OR_RETURN(std::string unk_token, OptionalString(model, "unk_token", "", where));
  if (!unk_token.empty()) {
    std::optional<int32_t> unk_id = bpe->TokenToId(unk_token);
    if (!unk_id.has_value()) {
      return FieldError(where, "unk_token",
                        absl::StrCat("\"", unk_token, "\" is not in the vocabulary"));
    }
    bpe->unk_id_ = unk_id;
  }
  for (int b = 0; b < 256; ++b) {
    bpe->byte_piece_ids_[b] = bpe->TokenToId(absl::StrFormat("<0x%02X>", b)).value_or(-1);
  }

  // Merges: "left right" strings (older files) or ["left", "right"] pairs.
  // A later duplicate of a pair replaces the earlier one, as in Hugging Face.
  const size_t prefix_length = bpe->continuing_subword_prefix_.size();
  bpe->merges_.reserve(merges->size());
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const json& entry = (*merges)[rank];
    std::string left;
    std::string right;
    if (entry.is_string()) {
      const std::string line = entry.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos) {
        return FieldError(where, absl::StrCat("merges[", rank, "]"),
                          absl::StrCat("\"", line, "\" is not \"left right\""));
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      return FieldError(where, absl::StrCat("merges[", rank, "]"),
                        "must be \"left right\" or [\"left\", \"right\"]");
    }
    const std::string merged =
        left + (right.size() >= prefix_length ? right.substr(prefix_length) : right);
    const std::optional<int32_t> left_id = bpe->TokenToId(left);
    const std::optional<int32_t> right_id = bpe->TokenToId(right);
    const std::optional<int32_t> merged_id = bpe->TokenToId(merged);
    const std::pair<const std::string*, std::optional<int32_t>> lookups[] = {
        {&left, left_id}, {&right, right_id}, {&merged, merged_id}};
    for (const auto& [token, id] : lookups) {
      if (!id.has_value()) {
        return FieldError(where, absl::StrCat("merges[", rank, "]"),
                          absl::StrCat("\"", *token, "\" is not in the vocabulary"));
      }
    }
    bpe->merges_[PairKey(*left_id, *right_id)] = Merge{static_cast<int32_t>(rank), *merged_id};
  }
  return bpe;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  const auto it = vocab_.find(AbslView(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_token_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const std::optional<int32_t> id = TokenToId(word); id.has_value()) {
      ids.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mutex_);
    const auto it = cache_.find(AbslView(word));
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids = TokenizeUncached(word);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(word_ids));
  }
}

std::vector<int32_t> BpeModel::TokenizeUncached(std::string_view word) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  // A pending unknown token (id, bytes covered), flushed before the next
  // known symbol; consecutive unknowns fuse when fuse_unk is set.
  int32_t unknown_id = -1;  // -1: none pending
  int32_t unknown_length = 0;
  std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t begin = pos;
    pos += Utf8SequenceLength(word, pos);
    const auto byte_length = static_cast<int32_t>(pos - begin);
    std::string_view text = word.substr(begin, byte_length);
    if ((begin > 0 && !continuing_subword_prefix_.empty()) ||
        (pos == word.size() && !end_of_word_suffix_.empty())) {
      piece.clear();
      if (begin > 0) piece.append(continuing_subword_prefix_);
      piece.append(text);
      if (pos == word.size()) piece.append(end_of_word_suffix_);
      text = piece;
    }
    if (const std::optional<int32_t> id = TokenToId(text); id.has_value()) {
      if (unknown_id >= 0) {
        AddSymbol(symbols, unknown_id, unknown_length);
        unknown_id = -1;
      }
      AddSymbol(symbols, *id, byte_length);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes_known = true;
      for (char c : text) all_bytes_known &= byte_piece_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all_bytes_known) {
        // As Hugging Face does, a pending unknown is not flushed here.
        for (char c : text) AddSymbol(symbols, byte_piece_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (unk_id_.has_value()) {
      if (unknown_id >= 0 && fuse_unk_) {
        unknown_length += byte_length;
      } else {
        if (unknown_id >= 0) AddSymbol(symbols, unknown_id, unknown_length);
        unknown_id = *unk_id_;
        unknown_length = byte_length;
      }
    }
    // Otherwise the character is dropped: no unknown token, no byte pieces.
  }
  if (unknown_id >= 0) AddSymbol(symbols, unknown_id, unknown_length);

  auto find_merge = [&](int32_t left, int32_t right) -> const Merge* {
    const auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<PendingMerge> queue;
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) {
    if (const Merge* merge = find_merge(i, i + 1)) queue.push({i, merge->rank, merge->new_id});
  }
  while (!queue.empty()) {
    const PendingMerge top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.position];
    if (left.length == 0 || left.next == -1) continue;
    const int32_t right_index = left.next;
    // Skip entries made stale by earlier merges.
    const Merge* current = find_merge(top.position, right_index);
    if (current == nullptr || current->new_id != top.new_id) continue;
    Symbol& right = symbols[right_index];
    left.id = top.new_id;
    left.length += right.length;
    left.next = right.next;
    right.length = 0;
    if (left.next != -1) symbols[left.next].prev = top.position;
    if (left.prev != -1) {
      if (const Merge* merge = find_merge(left.prev, top.position)) {
        queue.push({left.prev, merge->rank, merge->new_id});
      }
    }
    if (left.next != -1) {
      if (const Merge* merge = find_merge(top.position, left.next)) {
        queue.push({top.position, merge->rank, merge->new_id});
      }
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(symbols.size());
  for (const Symbol& symbol : symbols) {
    if (symbol.length != 0) ids.push_back(symbol.id);
  }
  return ids;
}

}  // namespace strata::tokenizer

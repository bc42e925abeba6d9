// The BPE model of a tokenizer.json: vocabulary, ranked merges, unknown token,
// byte fallback and subword affixes, with Hugging Face tokenizers' semantics.
//
// A word (one pre-token) is first cut into characters (each looked up in the
// vocabulary; missing ones become <0xXX> byte pieces with byte_fallback, else
// the unknown token, else nothing), then merged pair by pair, always the
// lowest-ranked pair present, leftmost first: a priority queue over pair
// ranks, O(n log n) in the word's length. Results are cached per word.
//
// Thread-safety: Tokenize may run concurrently (the cache takes a mutex);
// everything else is immutable after FromJson.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace strata::tokenizer {

class BpeModel {
 public:
  // Builds the model from the "model" object of tokenizer.json (type "BPE",
  // or no type with "vocab" and "merges", as older files write it).
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model,
                                                            const std::string& where);

  // Appends the ids of `word`. REQUIRES: `word` is valid UTF-8.
  void Tokenize(std::string_view word, std::vector<int32_t>& ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The vocabulary string of `id`, or nullptr when the vocabulary has none.
  const std::string* IdToToken(int32_t id) const;
  // Highest id in the vocabulary, or -1 when it is empty.
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  BpeModel() = default;

  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  // The ids of `word`, computed without the cache.
  std::vector<int32_t> TokenizeUncached(std::string_view word) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;  // "" where an id has no token
  std::vector<bool> has_token_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left id, right id) -> merge
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  std::array<int32_t, 256> byte_piece_ids_{};  // id of "<0xXX>", -1 when absent

  static constexpr size_t kCacheCapacity = 10000;
  static constexpr size_t kMaxCachedWordBytes = 256;
  mutable absl::Mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_
      ABSL_GUARDED_BY(cache_mutex_);
};

}  // namespace strata::tokenizer

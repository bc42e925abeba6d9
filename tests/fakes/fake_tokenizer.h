// A small deterministic tokenizer for engine tests: 64 ids, 0 "<unk>",
// 1 "<s>" (BOS) and 2 "</s>" (EOS) special, 3..28 the letters "a".."z",
// 29 " ", 30 ".", and 31..63 two-letter pieces. Encode is greedy longest
// match over the non-special pieces (other characters become <unk>; special
// tokens written in the text are not matched); Decode concatenates pieces.
// ASCII only, so every id decodes to whole characters.
//
// Thread-safety: immutable; safe to share.
#pragma once

#include <string>
#include <vector>

#include "worker/tokenizer/tokenizer.h"

namespace strata::fakes {

class FakeTokenizer final : public tokenizer::Tokenizer {
 public:
  static constexpr int32_t kVocabSize = 64;

  FakeTokenizer();

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return kVocabSize; }
  std::optional<int32_t> bos_token_id() const override { return 1; }
  std::optional<int32_t> eos_token_id() const override { return 2; }
  bool IsSpecial(int32_t id) const override { return id >= 0 && id <= 2; }
  std::string IdToToken(int32_t id) const override;

 private:
  std::vector<std::string> pieces_;  // [kVocabSize]
};

}  // namespace strata::fakes

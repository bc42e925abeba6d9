#include "tests/fakes/fake_tokenizer.h"

namespace strata::fakes {

FakeTokenizer::FakeTokenizer() {
  pieces_ = {std::string("<unk>"), std::string("<s>"), std::string("</s>")};
  pieces_.resize(kVocabSize);
  for (int32_t id = 3; id <= 28; ++id) pieces_[id].push_back(static_cast<char>('a' + id - 3));
  pieces_[29].push_back(' ');
  pieces_[30].push_back('.');
  for (int32_t id = 31; id < kVocabSize; ++id) {
    pieces_[id].push_back(static_cast<char>('a' + (id - 31) % 26));
    pieces_[id].push_back(static_cast<char>('a' + (id * 7) % 26));
  }
}

std::vector<int32_t> FakeTokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  if (add_special_tokens) ids.push_back(1);
  size_t at = 0;
  while (at < text.size()) {
    int32_t best = 0;  // <unk> for a character no piece covers
    size_t best_length = 0;
    for (int32_t id = 3; id < kVocabSize; ++id) {
      const std::string& piece = pieces_[id];
      if (piece.size() > best_length && text.substr(at, piece.size()) == piece) {
        best = id;
        best_length = piece.size();
      }
    }
    ids.push_back(best);
    at += best_length == 0 ? 1 : best_length;
  }
  return ids;
}

std::string FakeTokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= kVocabSize) continue;
    if (skip_special_tokens && IsSpecial(id)) continue;
    text += pieces_[id];
  }
  return text;
}

std::string FakeTokenizer::IdToToken(int32_t id) const {
  return id >= 0 && id < kVocabSize ? pieces_[id] : std::string();
}

}  // namespace strata::fakes

// Tokenizer built from a Hugging Face tokenizer.json (and the
// tokenizer_config.json beside it): the pipeline of Hugging Face tokenizers,
//   added tokens -> normalizer -> pre-tokenizer -> BPE model -> post-processor
// for Encode, and vocabulary strings -> decoder for Decode.
//
// Thread-safety: immutable after Load (the BPE word cache locks internally);
// every method may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/added_vocabulary.h"
#include "worker/tokenizer/bpe_model.h"
#include "worker/tokenizer/decoder.h"
#include "worker/tokenizer/normalizer.h"
#include "worker/tokenizer/post_processor.h"
#include "worker/tokenizer/pre_tokenizer.h"
#include "worker/tokenizer/tokenizer.h"

namespace strata::tokenizer {

class HuggingFaceTokenizer final : public Tokenizer {
 public:
  // `tokenizer_json` is the path of tokenizer.json; tokenizer_config.json is
  // read from the same folder when present.
  static absl::StatusOr<std::unique_ptr<HuggingFaceTokenizer>> Load(
      const std::string& tokenizer_json);

  // Builds from parsed JSON (`config` may be null: no tokenizer_config.json).
  // Errors name JSON locations, not files.
  static absl::StatusOr<std::unique_ptr<HuggingFaceTokenizer>> FromJson(
      const nlohmann::json& tokenizer, const nlohmann::json& config);

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> bos_token_id() const override { return bos_id_; }
  std::optional<int32_t> eos_token_id() const override { return eos_id_; }
  bool IsSpecial(int32_t id) const override;
  std::string IdToToken(int32_t id) const override;
  bool DecodeDependsOnNext(int32_t id) const override;

 private:
  HuggingFaceTokenizer() = default;

  // Vocabulary string of `id` (added tokens first), or nullptr.
  const std::string* TokenString(int32_t id) const;
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Normalizes, pre-tokenizes and BPE-encodes a stretch of text free of
  // raw added tokens; `at_text_start`: it starts the input text.
  void EncodeSegment(std::string_view text, bool at_text_start, std::vector<int32_t>& ids) const;
  absl::Status ApplyTokenizerConfig(const nlohmann::json& config);

  std::unique_ptr<Normalizer> normalizer_;       // null: none
  std::unique_ptr<PreTokenizer> pre_tokenizer_;  // null: the whole segment is one word
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Decoder> decoder_;  // null: tokens joined by spaces
  AddedVocabulary added_;
  SpecialTokenTemplate special_template_;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  int32_t vocab_size_ = 0;
};

}  // namespace strata::tokenizer

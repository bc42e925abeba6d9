// A tokenizer loaded from a Hugging Face tokenizer.json: BPE models of both
// flavours real checkpoints ship — sentencepiece-style (Metaspace "▁", byte
// fallback: Llama 2, Mistral) and byte-level (GPT-2 byte mapping plus split
// regexes: GPT-2, Llama 3, Qwen2, Falcon) — with their normalizers,
// pre-tokenizers, post-processors, decoders and added tokens.
//
// Thread-safety: immutable after loading; Encode/Decode may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `path` is a tokenizer.json file or a folder holding tokenizer.json (and
  // optionally tokenizer_config.json, which decides add_bos/add_eos).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);

  // Ids of `text`. With add_special_tokens, the post-processor's tokens (BOS)
  // are added as the files say; special tokens written in the text are matched
  // either way, as Hugging Face tokenizers does.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const = 0;

  // Text of `ids` (ids outside the vocabulary are skipped).
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;

  virtual int32_t vocab_size() const = 0;  // highest id + 1, added tokens included
  virtual std::optional<int32_t> bos_token_id() const = 0;
  virtual std::optional<int32_t> eos_token_id() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // The vocabulary string of `id` ("▁the", "Ġthe", "<0x0A>"); empty if unknown.
  virtual std::string IdToToken(int32_t id) const = 0;
};

// Incremental detokenization for streaming: Append() returns only text that
// is final — never half a UTF-8 character, never text a later token could
// still change (e.g. a leading space the decoder strips). The concatenation of
// everything Append() and Flush() return equals
// tokenizer.Decode(all_ids, skip_special_tokens).
//
// Thread-safety: one per stream; not thread-safe.
class StreamingDecoder {
 public:
  StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens,
                   std::vector<int32_t> prompt_ids = {});
  // New final text after appending `id`.
  std::string Append(int32_t id);
  // Whatever is held back (an incomplete UTF-8 tail is emitted as decoded).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // ids_[prefix_offset_, read_offset_) give context for the next decode
  size_t read_offset_ = 0;    // ids_ before this are already emitted
};

}  // namespace strata::tokenizer

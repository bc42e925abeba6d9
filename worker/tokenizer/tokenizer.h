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
  // Errors (NotFound, InvalidArgument) name the file and, for a bad field,
  // its JSON location.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);

  // Ids of `text`. With add_special_tokens, the post-processor's tokens (BOS)
  // are added as the files say; special tokens written in the text are matched
  // either way, as Hugging Face tokenizers does. Invalid UTF-8 in `text` is
  // first replaced by U+FFFD (as Rust's String::from_utf8_lossy would).
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const = 0;

  // Text of `ids` (ids outside the vocabulary are skipped).
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;

  virtual int32_t vocab_size() const = 0;  // highest id + 1, added tokens included
  virtual std::optional<int32_t> bos_token_id() const = 0;
  virtual std::optional<int32_t> eos_token_id() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // The vocabulary string of `id` ("▁the", "Ġthe", "<0x0A>"); empty if unknown.
  virtual std::string IdToToken(int32_t id) const = 0;

  // True when the text `id` decodes to can still change with the ids after it:
  // a byte-fallback piece ("<0xE2>") whose UTF-8 sequence later pieces complete
  // or invalidate. StreamingDecoder holds such ids back.
  virtual bool DecodeDependsOnNext(int32_t /*id*/) const { return false; }
};

// Incremental detokenization for streaming (the prefix/read-offset method of
// TGI and vLLM). Append() returns only text that is final: never half a UTF-8
// character (a decode ending in U+FFFD is held back) and never text a later id
// could still change (a pending byte-fallback piece is held back).
//
// Contract, with D = tokenizer.Decode(·, skip_special_tokens), P = prompt_ids
// and G = the ids appended: the concatenation of everything Append() and
// Flush() return equals D(P + G) with its longest common prefix with D(P)
// removed (cut at a character boundary). When D(P) is a prefix of D(P + G),
// the usual case, that is exactly the text G adds in the context of P; with no
// prompt it is D(G). Between calls the held-back ids are the only difference.
//
// Each Append() decodes only a window: the ids not yet emitted plus, as
// context, the ids that produced the last emitted text (the whole prompt until
// the first text is emitted), so its cost does not grow with the stream.
//
// Thread-safety: one per stream; not thread-safe. `tokenizer` must outlive it.
class StreamingDecoder {
 public:
  StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens,
                   std::vector<int32_t> prompt_ids = {});
  // New final text after appending `id`.
  std::string Append(int32_t id);
  // Whatever is held back (an incomplete UTF-8 tail is emitted as decoded).
  std::string Flush();

 private:
  // Decodes ids_[prefix_offset_, end) and, when final or the text is
  // complete, returns what it adds to prefix_text_ and moves the window on.
  std::string Advance(bool final);

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  // Invariant: ids_[prefix_offset_, read_offset_) decode to prefix_text_, and
  // either prefix_offset_ is 0 or those ids produced text: the context that
  // makes a window's decode agree with the full decode.
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;  // ids_ before this are already emitted
  std::string prefix_text_;
  // False only while read_offset_ is the end of a prompt whose decode was
  // incomplete (ends in U+FFFD or a pending byte piece): then the window keeps
  // starting at prefix_offset_ so the prompt's tail can still combine.
  bool read_offset_is_clean_ = true;
};

}  // namespace strata::tokenizer

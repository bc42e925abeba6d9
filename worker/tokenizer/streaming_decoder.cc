#include <span>

#include "worker/tokenizer/tokenizer.h"
#include "worker/tokenizer/unicode.h"

namespace strata::tokenizer {

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens,
                                   std::vector<int32_t> prompt_ids)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      ids_(std::move(prompt_ids)),
      read_offset_(ids_.size()) {
  if (!ids_.empty()) {
    // The whole prompt is the first window's context: exact, whatever the
    // decoder does at the start of a text.
    prefix_text_ = tokenizer_.Decode(ids_, skip_special_tokens_);
    read_offset_is_clean_ =
        !EndsWithReplacementCharacter(prefix_text_) && !tokenizer_.DecodeDependsOnNext(ids_.back());
  }
}

std::string StreamingDecoder::Append(int32_t id) {
  ids_.push_back(id);
  // A pending byte piece waits for the piece after it; an id that decodes to
  // nothing (a skipped special token) cannot close its group, so it waits too.
  if (tokenizer_.DecodeDependsOnNext(id)) return "";
  if ((skip_special_tokens_ && tokenizer_.IsSpecial(id)) || tokenizer_.IdToToken(id).empty()) {
    return "";
  }
  return Advance(/*final=*/false);
}

std::string StreamingDecoder::Flush() { return Advance(/*final=*/true); }

std::string StreamingDecoder::Advance(bool final) {
  if (read_offset_ == ids_.size()) return "";
  const std::span<const int32_t> window(ids_.data() + prefix_offset_, ids_.size() - prefix_offset_);
  std::string text = tokenizer_.Decode(window, skip_special_tokens_);
  if (!final && EndsWithReplacementCharacter(text)) return "";
  // What the window adds to the text already emitted for its context. In
  // steady state prefix_text_ is a prefix of `text`; after a prompt that ends
  // mid-character only their common prefix is.
  size_t common = 0;
  const size_t limit = std::min(text.size(), prefix_text_.size());
  while (common < limit && text[common] == prefix_text_[common]) ++common;
  while (common > 0 && common < text.size() &&
         (static_cast<unsigned char>(text[common]) & 0xC0) == 0x80) {
    --common;
  }
  if (!final && text.size() <= common) return "";  // nothing new yet (e.g. a skipped token)
  std::string emitted = text.substr(common);

  if (read_offset_is_clean_) {
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
    prefix_text_ = tokenizer_.Decode(
        std::span<const int32_t>(ids_.data() + prefix_offset_, read_offset_ - prefix_offset_),
        skip_special_tokens_);
  } else {
    read_offset_ = ids_.size();
    prefix_text_ = std::move(text);
  }
  read_offset_is_clean_ = true;
  return emitted;
}

}  // namespace strata::tokenizer

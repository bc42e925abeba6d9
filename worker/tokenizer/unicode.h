// UTF-8 and Unicode helpers shared by the tokenizer's stages: decoding and
// encoding code points, replacing invalid UTF-8 the way Rust's
// String::from_utf8_lossy does, GPT-2's byte <-> symbol map, canonical
// normalization (NFC/NFD), per-character lowercase and White_Space.
//
// Thread-safety: pure functions over constant data.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace strata::tokenizer {

inline constexpr char32_t kReplacementCharacter = 0xFFFD;

// Appends the UTF-8 encoding of `code_point` (a Unicode scalar value).
void AppendUtf8(char32_t code_point, std::string& out);

// Decodes the code point at text[pos], which starts a valid UTF-8 sequence,
// and advances `pos` past it.
// REQUIRES: `text` is valid UTF-8 and pos < text.size().
char32_t NextCodePoint(std::string_view text, size_t& pos);

// Length in bytes of the valid UTF-8 sequence starting at text[pos].
// REQUIRES: `text` is valid UTF-8 and pos < text.size().
size_t Utf8SequenceLength(std::string_view text, size_t pos);

// Length of the longest prefix of `bytes` made of whole, valid UTF-8 sequences
// (equals bytes.size() when `bytes` is valid UTF-8).
size_t ValidUtf8PrefixLength(std::string_view bytes);

// `bytes` with each maximal invalid subsequence replaced by U+FFFD
// (Unicode's "substitution of maximal subparts", as Rust's from_utf8_lossy).
std::string Utf8Lossy(std::string_view bytes);

// True when `text` ends with U+FFFD.
bool EndsWithReplacementCharacter(std::string_view text);

// GPT-2's reversible byte -> printable symbol map (`bytes_to_unicode` in
// openai/gpt-2 encoder.py): printable Latin-1 bytes map to themselves, the
// other 68 to U+0100 onward in byte order.
const std::array<char32_t, 256>& ByteToSymbol();
// Inverse of ByteToSymbol(): the byte of `symbol`, or -1 if it is none.
int SymbolToByte(char32_t symbol);

// Unicode White_Space (Rust's char::is_whitespace).
bool IsWhiteSpace(char32_t code_point);

// Canonical decomposition (NFD) and canonical composition (NFC) of valid UTF-8.
std::string NormalizeNfd(std::string_view text);
std::string NormalizeNfc(std::string_view text);

// Each character replaced by its lowercase mapping, without context (as
// Rust's char::to_lowercase applied per character).
std::string Lowercase(std::string_view text);

}  // namespace strata::tokenizer

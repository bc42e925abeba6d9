#include "worker/tokenizer/unicode.h"

#include <algorithm>
#include <vector>

#include "worker/tokenizer/unicode_tables.h"

namespace strata::tokenizer {
namespace {

namespace tables = unicode_tables;

// Hangul syllable composition constants (Unicode 3.12).
constexpr char32_t kHangulSBase = 0xAC00;
constexpr char32_t kHangulLBase = 0x1100;
constexpr char32_t kHangulVBase = 0x1161;
constexpr char32_t kHangulTBase = 0x11A7;
constexpr int kHangulLCount = 19;
constexpr int kHangulVCount = 21;
constexpr int kHangulTCount = 28;
constexpr int kHangulNCount = kHangulVCount * kHangulTCount;
constexpr int kHangulSCount = kHangulLCount * kHangulNCount;

// Valid range of the second byte of a sequence led by `lead`, and the sequence
// length; length 0 for bytes that cannot lead a sequence.
struct LeadInfo {
  int length;
  unsigned char second_min;
  unsigned char second_max;
};

LeadInfo InfoForLead(unsigned char lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};
  if (lead == 0xED) return {3, 0x80, 0x9F};
  if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};
  if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes of the valid prefix of the sequence starting at bytes[pos]:
// equals the sequence length when the sequence is complete and valid, less
// (at least 1) for a maximal invalid subpart.
size_t ScanSequence(std::string_view bytes, size_t pos, bool& valid) {
  const auto lead = static_cast<unsigned char>(bytes[pos]);
  if (lead < 0x80) {
    valid = true;
    return 1;
  }
  const LeadInfo info = InfoForLead(lead);
  valid = false;
  if (info.length == 0) return 1;
  size_t consumed = 1;
  for (int k = 1; k < info.length; ++k) {
    if (pos + consumed >= bytes.size()) return consumed;
    const auto byte = static_cast<unsigned char>(bytes[pos + consumed]);
    const unsigned char lo = k == 1 ? info.second_min : 0x80;
    const unsigned char hi = k == 1 ? info.second_max : 0xBF;
    if (byte < lo || byte > hi) return consumed;
    ++consumed;
  }
  valid = true;
  return consumed;
}

uint32_t CombiningClass(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto* begin = tables::kCombiningClassRanges;
  const auto* end = begin + tables::kCombiningClassRangesSize;
  const auto* it = std::upper_bound(
      begin, end, cp, [](char32_t value, const auto& range) { return value < range.first; });
  if (it == begin) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

const tables::Decomposition* FindDecomposition(char32_t cp) {
  const auto* begin = tables::kCanonicalDecompositions;
  const auto* end = begin + tables::kCanonicalDecompositionsSize;
  const auto* it = std::lower_bound(
      begin, end, cp, [](const auto& row, char32_t value) { return row.code_point < value; });
  return it != end && it->code_point == cp ? it : nullptr;
}

void DecomposeInto(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kHangulSBase && cp < kHangulSBase + kHangulSCount) {
    const int index = static_cast<int>(cp - kHangulSBase);
    out.push_back(kHangulLBase + index / kHangulNCount);
    out.push_back(kHangulVBase + (index % kHangulNCount) / kHangulTCount);
    if (index % kHangulTCount != 0) out.push_back(kHangulTBase + index % kHangulTCount);
    return;
  }
  const tables::Decomposition* row = cp < 0xC0 ? nullptr : FindDecomposition(cp);
  if (row == nullptr) {
    out.push_back(cp);
    return;
  }
  DecomposeInto(row->first, out);
  if (row->second != 0) DecomposeInto(row->second, out);
}

// Code points of `text` fully decomposed and canonically ordered.
std::vector<char32_t> Decompose(std::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) DecomposeInto(NextCodePoint(text, pos), out);
  // Canonical ordering: a stable sort by combining class within each run of
  // non-starters (insertion sort; runs are short).
  for (size_t i = 1; i < out.size(); ++i) {
    const uint32_t ccc = CombiningClass(out[i]);
    if (ccc == 0) continue;
    size_t j = i;
    while (j > 0) {
      const uint32_t previous = CombiningClass(out[j - 1]);
      if (previous == 0 || previous <= ccc) break;
      std::swap(out[j - 1], out[j]);
      --j;
    }
  }
  return out;
}

// The primary composite of `first` + `second`, or 0.
char32_t Compose(char32_t first, char32_t second) {
  if (first >= kHangulLBase && first < kHangulLBase + kHangulLCount && second >= kHangulVBase &&
      second < kHangulVBase + kHangulVCount) {
    return kHangulSBase +
           ((first - kHangulLBase) * kHangulVCount + (second - kHangulVBase)) * kHangulTCount;
  }
  if (first >= kHangulSBase && first < kHangulSBase + kHangulSCount &&
      (first - kHangulSBase) % kHangulTCount == 0 && second > kHangulTBase &&
      second < kHangulTBase + kHangulTCount) {
    return first + (second - kHangulTBase);
  }
  const auto* begin = tables::kPrimaryComposites;
  const auto* end = begin + tables::kPrimaryCompositesSize;
  const auto* it =
      std::lower_bound(begin, end, std::pair(first, second),
                       [](const auto& row, const std::pair<char32_t, char32_t>& key) {
                         return std::pair<char32_t, char32_t>(row.first, row.second) < key;
                       });
  return it != end && it->first == first && it->second == second ? it->composite : 0;
}

std::string ToUtf8(const std::vector<char32_t>& code_points) {
  std::string out;
  out.reserve(code_points.size());
  for (char32_t cp : code_points) AppendUtf8(cp, out);
  return out;
}

// True when every byte is below `limit`, i.e. every code point is below the
// one whose UTF-8 lead byte `limit` is.
bool AllBytesBelow(std::string_view text, unsigned char limit) {
  return std::all_of(text.begin(), text.end(),
                     [limit](char c) { return static_cast<unsigned char>(c) < limit; });
}

// Text below U+00C0 (lead byte 0xC3) has no canonical decomposition: it is NFD.
constexpr unsigned char kNfdStableLimit = 0xC3;
// Text below U+0300 (lead byte 0xCC) is NFC: nothing there decomposes in NFC or
// composes with a following character below U+0300.
constexpr unsigned char kNfcStableLimit = 0xCC;

}  // namespace

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t Utf8SequenceLength(std::string_view text, size_t pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

char32_t NextCodePoint(std::string_view text, size_t& pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  const size_t length = Utf8SequenceLength(text, pos);
  char32_t cp = length == 1   ? lead
                : length == 2 ? (lead & 0x1F)
                : length == 3 ? (lead & 0x0F)
                              : (lead & 0x07);
  for (size_t k = 1; k < length; ++k) {
    cp = (cp << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3F);
  }
  pos += length;
  return cp;
}

size_t ValidUtf8PrefixLength(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (static_cast<unsigned char>(bytes[pos]) < 0x80) {
      ++pos;
      continue;
    }
    bool valid = false;
    const size_t length = ScanSequence(bytes, pos, valid);
    if (!valid) return pos;
    pos += length;
  }
  return pos;
}

std::string Utf8Lossy(std::string_view bytes) {
  const size_t valid_prefix = ValidUtf8PrefixLength(bytes);
  if (valid_prefix == bytes.size()) return std::string(bytes);
  std::string out(bytes.substr(0, valid_prefix));
  size_t pos = valid_prefix;
  while (pos < bytes.size()) {
    bool valid = false;
    const size_t length = ScanSequence(bytes, pos, valid);
    if (valid) {
      out.append(bytes.substr(pos, length));
    } else {
      AppendUtf8(kReplacementCharacter, out);
    }
    pos += length;
  }
  return out;
}

bool EndsWithReplacementCharacter(std::string_view text) {
  return text.size() >= 3 && text.substr(text.size() - 3) == "\xEF\xBF\xBD";
}

const std::array<char32_t, 256>& ByteToSymbol() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> map{};
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) map[b] = printable(b) ? static_cast<char32_t>(b) : next++;
    return map;
  }();
  return table;
}

int SymbolToByte(char32_t symbol) {
  static const std::array<int16_t, 0x144> table = [] {
    std::array<int16_t, 0x144> inverse;
    inverse.fill(-1);
    const auto& forward = ByteToSymbol();
    for (int b = 0; b < 256; ++b) inverse[forward[b]] = static_cast<int16_t>(b);
    return inverse;
  }();
  return symbol < table.size() ? table[symbol] : -1;
}

bool IsWhiteSpace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string NormalizeNfd(std::string_view text) {
  if (AllBytesBelow(text, kNfdStableLimit)) return std::string(text);
  return ToUtf8(Decompose(text));
}

std::string NormalizeNfc(std::string_view text) {
  if (AllBytesBelow(text, kNfcStableLimit)) return std::string(text);
  const std::vector<char32_t> decomposed = Decompose(text);
  std::vector<char32_t> composed;
  composed.reserve(decomposed.size());
  // Index in `composed` of the last starter, and the combining class of the
  // last character kept after it (-1: none, i.e. adjacent to the starter).
  int64_t starter = -1;
  int64_t last_class = -1;
  for (char32_t cp : decomposed) {
    const auto ccc = static_cast<int64_t>(CombiningClass(cp));
    if (starter >= 0) {
      const bool blocked = last_class != -1 && (last_class == 0 || last_class >= ccc);
      if (!blocked) {
        const char32_t composite = Compose(composed[starter], cp);
        if (composite != 0) {
          composed[starter] = composite;
          continue;
        }
      }
    }
    if (ccc == 0) {
      starter = static_cast<int64_t>(composed.size());
      last_class = -1;
    } else {
      last_class = ccc;
    }
    composed.push_back(cp);
  }
  return ToUtf8(composed);
}

std::string Lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const auto byte = static_cast<unsigned char>(text[pos]);
    if (byte < 0x80) {
      out.push_back(static_cast<char>(byte >= 'A' && byte <= 'Z' ? byte + ('a' - 'A') : byte));
      ++pos;
      continue;
    }
    const char32_t cp = NextCodePoint(text, pos);
    const auto* begin = tables::kLowercaseMappings;
    const auto* end = begin + tables::kLowercaseMappingsSize;
    const auto* it = std::lower_bound(
        begin, end, cp, [](const auto& row, char32_t value) { return row.code_point < value; });
    if (it != end && it->code_point == cp) {
      AppendUtf8(it->first, out);
      if (it->second != 0) AppendUtf8(it->second, out);
    } else {
      AppendUtf8(cp, out);
    }
  }
  return out;
}

}  // namespace strata::tokenizer

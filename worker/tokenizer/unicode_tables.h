// Unicode character data for the tokenizer's normalizers (NFC, NFD, Lowercase),
// generated from Python's unicodedata by gen_unicode_tables.py into
// unicode_tables.cc. Every table is sorted by its first field.
//
// Thread-safety: constant data.
#pragma once

#include <cstddef>
#include <cstdint>

namespace strata::tokenizer::unicode_tables {

extern const char kUnicodeVersion[];

// Code points first..last (inclusive) have canonical combining class `ccc`;
// code points in no range have class 0.
struct CombiningClassRange {
  uint32_t first;
  uint32_t last;
  uint32_t ccc;
};
extern const CombiningClassRange kCombiningClassRanges[];
extern const size_t kCombiningClassRangesSize;

// One step of canonical decomposition: `code_point` -> `first` `second`
// (`second` is 0 for singletons). Hangul syllables are algorithmic and absent.
struct Decomposition {
  uint32_t code_point;
  uint32_t first;
  uint32_t second;
};
extern const Decomposition kCanonicalDecompositions[];
extern const size_t kCanonicalDecompositionsSize;

// `first` followed by `second` composes to `composite` (primary composites only,
// composition exclusions removed), sorted by (first, second).
struct Composition {
  uint32_t first;
  uint32_t second;
  uint32_t composite;
};
extern const Composition kPrimaryComposites[];
extern const size_t kPrimaryCompositesSize;

// Per-character lowercase (no context): `code_point` -> `first` `second`
// (`second` is 0 when the mapping is one character).
struct LowercaseMapping {
  uint32_t code_point;
  uint32_t first;
  uint32_t second;
};
extern const LowercaseMapping kLowercaseMappings[];
extern const size_t kLowercaseMappingsSize;

}  // namespace strata::tokenizer::unicode_tables

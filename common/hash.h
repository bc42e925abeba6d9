// Integer mixing for hash chains and seeded generators.
#pragma once

#include <cstdint>

namespace strata {

// SplitMix64's finaliser: a bijection on 64-bit integers whose output bits
// each depend on every input bit.
inline uint64_t MixBits(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace strata

// Matrix-vector kernels for decode: y = x · W^T for a few rows of x, streaming
// W (F32, F16 or BF16) once from memory and widening it to F32 in registers.
// Decode is memory-bound, so these kernels aim at the machine's read
// bandwidth: several weight rows are streamed at once, and BF16 is widened
// without shuffles (a 32-bit lane holds two BF16 values: `lane << 16` is the
// even one, `lane & 0xffff0000` the odd one), against a copy of x split into
// even and odd elements per block (SplitEvenOdd).
//
// Two instruction sets: AVX-512 (compiled with a target attribute, chosen at
// run time when the CPU has avx512f/bw) and AVX2 + FMA + F16C (the build's
// floor). Both are exposed so tests can check each against scalar loops.
//
// Thread-safety: pure functions; callers split rows across threads.
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace strata::backend {

// The most x rows one kernel call handles (they share each weight load).
inline constexpr int kGemvMaxRows = 4;

struct GemvArgs {
  const float* x = nullptr;  // [n, in], row stride `in`
  // x rewritten by SplitEvenOdd for the kernel's block width (BF16 only):
  // [n, in rounded down to the block], row stride `in`.
  const float* x_split = nullptr;
  // x rounded to BF16 (RoundToBf16), for GemvAvx512Bf16: [n, in], stride `in`.
  const uint16_t* x_bf16 = nullptr;
  int64_t n = 0;  // 1 .. kGemvMaxRows
  int64_t in = 0;
  const void* w = nullptr;  // [out, in] row-major, the whole matrix
  DType dtype = DType::kF32;
  float* y = nullptr;  // [n, ldy]; the kernel writes y[r * ldy + row]
  int64_t ldy = 0;
  const float* bias = nullptr;  // [out] or nullptr
};

// Computes rows [row_begin, row_end) of y.
void GemvAvx512(const GemvArgs& args, int64_t row_begin, int64_t row_end);
void GemvAvx2(const GemvArgs& args, int64_t row_begin, int64_t row_end);
// BF16 weights only, on CPUs with AVX512-BF16: x is taken rounded to BF16
// (args.x_bf16) and multiplied pairwise with vdpbf16ps into F32 sums, twice
// the multiply-adds per instruction of widening the weights. This is the
// precision a BF16 model runs at in PyTorch (activations in BF16, F32
// accumulation); each row of y is still summed in one order whatever n is.
void GemvAvx512Bf16(const GemvArgs& args, int64_t row_begin, int64_t row_end);

// out[i] = x[i] rounded to BF16 (nearest even), i < n; vectorised where the
// CPU has AVX512-BF16.
void RoundToBf16(const float* x, int64_t n, uint16_t* out);

// Block widths of the BF16 split layout per kernel.
inline constexpr int64_t kSplitBlockAvx512 = 32;
inline constexpr int64_t kSplitBlockAvx2 = 16;

// For each full block of `block` elements of x[0, in): out gets the block's
// even elements, then its odd ones. Elements past the last full block are
// not written.
void SplitEvenOdd(const float* x, int64_t in, int64_t block, float* out);

// True when the CPU runs the AVX-512 kernels (avx512f and avx512bw).
bool CpuHasAvx512();
// True when it also has AVX512-BF16 (GemvAvx512Bf16).
bool CpuHasAvx512Bf16();

}  // namespace strata::backend

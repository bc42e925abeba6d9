#include "worker/backend/cpu/gemv_kernels.h"

#include <immintrin.h>

// The AVX-512 kernels are compiled for AVX-512 by attribute, whatever the
// build's -m flags; they run only when CpuHasAvx512().
#define STRATA_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define STRATA_TARGET_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")))

namespace strata::backend {
namespace {

template <DType D>
struct Elem {
  using T = uint16_t;
};
template <>
struct Elem<DType::kF32> {
  using T = float;
};

template <DType D>
inline float ToF32(typename Elem<D>::T v) {
  if constexpr (D == DType::kF32) {
    return v;
  } else if constexpr (D == DType::kBF16) {
    return Bf16ToF32(v);
  } else {
    return _cvtsh_ss(v);
  }
}

// Scalar remainder of one dot product: columns [begin, in).
template <DType D>
inline float TailDot(const float* x, const typename Elem<D>::T* w, int64_t begin, int64_t in) {
  float sum = 0.0f;
  for (int64_t k = begin; k < in; ++k) sum += x[k] * ToF32<D>(w[k]);
  return sum;
}

// ---- AVX-512 ----------------------------------------------------------------

inline float HorizontalSum(__m256 v) {
  const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_movehdup_ps(sum2)));
}

// Loads 32 weights as two F32 vectors: for BF16 the even and odd elements
// (matching the split x), otherwise elements [0, 16) and [16, 32).
// (The all-ones maskz_ forms are the plain instructions; the unmasked
// intrinsics trip a false -Wuninitialized in GCC 12 under a target attribute.)
template <DType D>
STRATA_TARGET_AVX512 inline void Load32(const typename Elem<D>::T* p, __m512& a, __m512& b) {
  if constexpr (D == DType::kBF16) {
    const __m512i v = _mm512_loadu_si512(p);
    a = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, v, 16));
    b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  } else if constexpr (D == DType::kF16) {
    a = _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    b = _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
  } else {
    a = _mm512_loadu_ps(p);
    b = _mm512_loadu_ps(p + 16);
  }
}

// Sum of the 16 lanes, through memory: the AVX-512 reduction and shuffle
// intrinsics trip a false -Wuninitialized in GCC 12's headers, and this runs
// once per output row.
STRATA_TARGET_AVX512 inline float Reduce512(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  return HorizontalSum(_mm256_add_ps(_mm256_load_ps(lanes), _mm256_load_ps(lanes + 8)));
}

// y for weight rows [row, row + R) and all NX rows of x. One accumulator per
// (weight row, x row) takes both halves of each block in turn, so a row of y
// is summed in the same order whatever NX and R are: a sequence's logits do
// not depend on how many others share its batch.
template <DType D, int NX, int R>
STRATA_TARGET_AVX512 void RowsAvx512(const GemvArgs& args, int64_t row) {
  using T = typename Elem<D>::T;
  const int64_t in = args.in;
  const int64_t full = in / kSplitBlockAvx512 * kSplitBlockAvx512;
  const T* w = static_cast<const T*>(args.w) + row * in;
  const float* xv = D == DType::kBF16 ? args.x_split : args.x;
  __m512 acc[R][NX];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NX; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < full; k += kSplitBlockAvx512) {
    __m512 xa[NX];
    __m512 xb[NX];
    for (int j = 0; j < NX; ++j) {
      xa[j] = _mm512_loadu_ps(xv + j * in + k);
      xb[j] = _mm512_loadu_ps(xv + j * in + k + 16);
    }
    for (int r = 0; r < R; ++r) {
      __m512 wa;
      __m512 wb;
      Load32<D>(w + r * in + k, wa, wb);
      for (int j = 0; j < NX; ++j) {
        acc[r][j] = _mm512_fmadd_ps(wa, xa[j], acc[r][j]);
        acc[r][j] = _mm512_fmadd_ps(wb, xb[j], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    const float bias = args.bias != nullptr ? args.bias[row + r] : 0.0f;
    for (int j = 0; j < NX; ++j) {
      float sum = Reduce512(acc[r][j]);
      sum += TailDot<D>(args.x + j * in, w + r * in, full, in);
      args.y[j * args.ldy + row + r] = sum + bias;
    }
  }
}

// Rows per call: as many as the 32 vector registers hold accumulators for.
// More concurrent rows keep more loads in flight, which is what a
// memory-bound loop needs (8 rows stream measurably faster than 4 on one x).
template <DType D, int NX>
STRATA_TARGET_AVX512 void RangeAvx512(const GemvArgs& args, int64_t begin, int64_t end) {
  constexpr int kRows = NX == 1 ? 8 : 4;
  int64_t row = begin;
  for (; row + kRows <= end; row += kRows) RowsAvx512<D, NX, kRows>(args, row);
  for (; row < end; ++row) RowsAvx512<D, NX, 1>(args, row);
}

template <DType D>
STRATA_TARGET_AVX512 void DispatchRowsAvx512(const GemvArgs& args, int64_t begin, int64_t end) {
  switch (args.n) {
    case 1:
      return RangeAvx512<D, 1>(args, begin, end);
    case 2:
      return RangeAvx512<D, 2>(args, begin, end);
    case 3:
      return RangeAvx512<D, 3>(args, begin, end);
    default:
      return RangeAvx512<D, 4>(args, begin, end);
  }
}

// ---- AVX-512 BF16 dot products -------------------------------------------------

// y for weight rows [row, row + R) and all NX rows of x; one accumulator per
// (weight row, x row), blocks of 32 in order, then the tail: the same
// summation order for every NX and R.
template <int NX, int R>
STRATA_TARGET_AVX512_BF16 void RowsBf16Dot(const GemvArgs& args, int64_t row) {
  const int64_t in = args.in;
  const int64_t full = in / 32 * 32;
  const uint16_t* w = static_cast<const uint16_t*>(args.w) + row * in;
  const uint16_t* x = args.x_bf16;
  __m512 acc[R][NX];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NX; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < full; k += 32) {
    __m512bh xv[NX];
    for (int j = 0; j < NX; ++j) xv[j] = (__m512bh)_mm512_loadu_si512(x + j * in + k);
    for (int r = 0; r < R; ++r) {
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + r * in + k);
      for (int j = 0; j < NX; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], wv, xv[j]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const float bias = args.bias != nullptr ? args.bias[row + r] : 0.0f;
    for (int j = 0; j < NX; ++j) {
      float sum = Reduce512(acc[r][j]);
      for (int64_t k = full; k < in; ++k) {
        sum += Bf16ToF32(x[j * in + k]) * Bf16ToF32(w[r * in + k]);
      }
      args.y[j * args.ldy + row + r] = sum + bias;
    }
  }
}

template <int NX>
STRATA_TARGET_AVX512_BF16 void RangeBf16Dot(const GemvArgs& args, int64_t begin, int64_t end) {
  constexpr int kRows = NX == 1 ? 8 : 4;
  int64_t row = begin;
  for (; row + kRows <= end; row += kRows) RowsBf16Dot<NX, kRows>(args, row);
  for (; row < end; ++row) RowsBf16Dot<NX, 1>(args, row);
}

// ---- AVX2 -------------------------------------------------------------------

template <DType D>
inline void Load16(const typename Elem<D>::T* p, __m256& a, __m256& b) {
  if constexpr (D == DType::kBF16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    a = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    b = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  } else if constexpr (D == DType::kF16) {
    a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  } else {
    a = _mm256_loadu_ps(p);
    b = _mm256_loadu_ps(p + 8);
  }
}

template <DType D, int NX, int R>
void RowsAvx2(const GemvArgs& args, int64_t row) {
  using T = typename Elem<D>::T;
  const int64_t in = args.in;
  const int64_t full = in / kSplitBlockAvx2 * kSplitBlockAvx2;
  const T* w = static_cast<const T*>(args.w) + row * in;
  const float* xv = D == DType::kBF16 ? args.x_split : args.x;
  __m256 acc[R][NX];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NX; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < full; k += kSplitBlockAvx2) {
    __m256 xa[NX];
    __m256 xb[NX];
    for (int j = 0; j < NX; ++j) {
      xa[j] = _mm256_loadu_ps(xv + j * in + k);
      xb[j] = _mm256_loadu_ps(xv + j * in + k + 8);
    }
    for (int r = 0; r < R; ++r) {
      __m256 wa;
      __m256 wb;
      Load16<D>(w + r * in + k, wa, wb);
      for (int j = 0; j < NX; ++j) {
        acc[r][j] = _mm256_fmadd_ps(wa, xa[j], acc[r][j]);
        acc[r][j] = _mm256_fmadd_ps(wb, xb[j], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    const float bias = args.bias != nullptr ? args.bias[row + r] : 0.0f;
    for (int j = 0; j < NX; ++j) {
      float sum = HorizontalSum(acc[r][j]);
      sum += TailDot<D>(args.x + j * in, w + r * in, full, in);
      args.y[j * args.ldy + row + r] = sum + bias;
    }
  }
}

template <DType D, int NX>
void RangeAvx2(const GemvArgs& args, int64_t begin, int64_t end) {
  constexpr int kRows = NX == 1 ? 8 : (NX <= 3 ? 2 : 1);
  int64_t row = begin;
  for (; row + kRows <= end; row += kRows) RowsAvx2<D, NX, kRows>(args, row);
  for (; row < end; ++row) RowsAvx2<D, NX, 1>(args, row);
}

template <DType D>
void DispatchRowsAvx2(const GemvArgs& args, int64_t begin, int64_t end) {
  switch (args.n) {
    case 1:
      return RangeAvx2<D, 1>(args, begin, end);
    case 2:
      return RangeAvx2<D, 2>(args, begin, end);
    case 3:
      return RangeAvx2<D, 3>(args, begin, end);
    default:
      return RangeAvx2<D, 4>(args, begin, end);
  }
}

}  // namespace

void GemvAvx512(const GemvArgs& args, int64_t row_begin, int64_t row_end) {
  switch (args.dtype) {
    case DType::kF32:
      return DispatchRowsAvx512<DType::kF32>(args, row_begin, row_end);
    case DType::kF16:
      return DispatchRowsAvx512<DType::kF16>(args, row_begin, row_end);
    case DType::kBF16:
      return DispatchRowsAvx512<DType::kBF16>(args, row_begin, row_end);
  }
}

void GemvAvx2(const GemvArgs& args, int64_t row_begin, int64_t row_end) {
  switch (args.dtype) {
    case DType::kF32:
      return DispatchRowsAvx2<DType::kF32>(args, row_begin, row_end);
    case DType::kF16:
      return DispatchRowsAvx2<DType::kF16>(args, row_begin, row_end);
    case DType::kBF16:
      return DispatchRowsAvx2<DType::kBF16>(args, row_begin, row_end);
  }
}

void GemvAvx512Bf16(const GemvArgs& args, int64_t row_begin, int64_t row_end) {
  switch (args.n) {
    case 1:
      return RangeBf16Dot<1>(args, row_begin, row_end);
    case 2:
      return RangeBf16Dot<2>(args, row_begin, row_end);
    case 3:
      return RangeBf16Dot<3>(args, row_begin, row_end);
    default:
      return RangeBf16Dot<4>(args, row_begin, row_end);
  }
}

namespace {

// 16 at a time with vcvtneps2bf16 (round to nearest even, as F32ToBf16):
// a prefill chunk's x is millions of values, rounded on one thread.
STRATA_TARGET_AVX512_BF16 void RoundToBf16Avx512(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)rounded);
  }
  for (; i < n; ++i) out[i] = F32ToBf16(x[i]);
}

}  // namespace

void RoundToBf16(const float* x, int64_t n, uint16_t* out) {
  if (CpuHasAvx512Bf16()) return RoundToBf16Avx512(x, n, out);
  for (int64_t i = 0; i < n; ++i) out[i] = F32ToBf16(x[i]);
}

void SplitEvenOdd(const float* x, int64_t in, int64_t block, float* out) {
  const int64_t half = block / 2;
  const int64_t full = in / block * block;
  for (int64_t b = 0; b < full; b += block) {
    for (int64_t j = 0; j < half; ++j) {
      out[b + j] = x[b + 2 * j];
      out[b + half + j] = x[b + 2 * j + 1];
    }
  }
}

bool CpuHasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return has;
}

bool CpuHasAvx512Bf16() {
  static const bool has = CpuHasAvx512() && __builtin_cpu_supports("avx512bf16");
  return has;
}

}  // namespace strata::backend

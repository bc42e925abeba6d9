// Small vector helpers for the CPU kernels, written for AVX2 + FMA (the
// build's floor, see STRATA_CPU_FLAGS). Unaligned pointers are fine.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace strata::backend::simd {

inline float HorizontalSum(__m256 v) {
  const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_movehdup_ps(sum2)));
}

// sum a[i] * b[i]
inline float Dot(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y[i] += alpha * x[i]
inline void Axpy(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

// out[i] = x[i] * scale * w[i]
inline void ScaleMul(const float* x, float scale, const float* w, float* out, int64_t n) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(
        out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(s, _mm256_loadu_ps(x + i))));
  }
  for (; i < n; ++i) out[i] = w[i] * (scale * x[i]);
}

// e^x, lane by lane, to about 2 ulp (Cephes' expf: x = n·ln2 + r with
// |r| <= ln2/2, a degree-6 polynomial for e^r, then 2^n through the exponent
// bits). Inputs are clamped to [-87.3, 88.7], where e^x is a normal float.
inline __m256 Exp(__m256 x) {
  const __m256 max_x = _mm256_set1_ps(88.7f);
  const __m256 min_x = _mm256_set1_ps(-87.3f);
  x = _mm256_max_ps(_mm256_min_ps(x, max_x), min_x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n·ln2, with ln2 split in two for precision.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n: n + 127 in the exponent field. n is in [-126, 128] after the clamp;
  // split the scaling in two so that 2^128 does not overflow on its own.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256 scale1 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 scale2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, scale1), scale2);
}

// out[i] = x[i] / (1 + e^-x[i]) * up[i]
inline void SiluMul(const float* x, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(x + i);
    const __m256 e = Exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    alignas(32) float lanes[8] = {-x[i]};
    _mm256_store_ps(lanes, Exp(_mm256_load_ps(lanes)));
    out[i] = x[i] / (1.0f + lanes[0]) * up[i];
  }
}

// In place: v[i] = e^(v[i] - max_value); returns the sum of the results.
inline float ExpShiftSum(float* v, float max_value, int64_t n) {
  const __m256 shift = _mm256_set1_ps(max_value);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(v + i), shift));
    _mm256_storeu_ps(v + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  float total = HorizontalSum(sum);
  if (i < n) {
    alignas(32) float lanes[8];
    for (int j = 0; j < 8; ++j) lanes[j] = i + j < n ? v[i + j] - max_value : -100.0f;
    _mm256_store_ps(lanes, Exp(_mm256_load_ps(lanes)));
    for (int j = 0; i + j < n; ++j) {
      v[i + j] = lanes[j];
      total += lanes[j];
    }
  }
  return total;
}

inline float Max(const float* v, int64_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(v + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float result = lanes[0];
  for (int j = 1; j < 8; ++j) result = std::max(result, lanes[j]);
  for (; i < n; ++i) result = std::max(result, v[i]);
  return result;
}

}  // namespace strata::backend::simd

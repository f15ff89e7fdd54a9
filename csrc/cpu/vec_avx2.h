// Vector math types for the AVX2 kernels (included only by csrc/cpu/vector_kernels_avx2.cpp,
// inside its AVX2 target region; no torch header).
//
// F32<N> / F64<N> hold N AVX registers (8N floats / 4N doubles): every operation is issued N
// times on independent registers, so long dependency chains (pDCA_e's exp polynomial) overlap
// instead of stalling the pipeline. They provide exactly what the rules in csrc/rules/*.h use on
// their math type: + - * / (with scalars on either side), and the helpers of common.h, bits.h,
// adahessian.h as overloads found by argument-dependent lookup. Each is the scalar helper's
// operation lane by lane, with the same IEEE rounding (a fused multiply-add only where the rule
// calls mul_add_ in float), so results are bit-identical.
// Everything lives in an unnamed namespace: nothing compiled for AVX2 here gets external linkage
// (a weak symbol the linker could pick for the baseline build too).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "../rules/adahessian.h"
#include "../rules/common.h"

namespace sparseopt {
namespace cpu {
namespace {

#define SPARSEOPT_VEC_INLINE __attribute__((always_inline)) inline

template <int N>
struct I32 {  // the bits of F32<N>
  __m256i r[N];
  friend SPARSEOPT_VEC_INLINE I32 operator+(const I32& a, int32_t s) {
    I32 o;
    for (int i = 0; i < N; ++i) o.r[i] = _mm256_add_epi32(a.r[i], _mm256_set1_epi32(s));
    return o;
  }
  friend SPARSEOPT_VEC_INLINE I32 operator-(const I32& a, const I32& b) {
    I32 o;
    for (int i = 0; i < N; ++i) o.r[i] = _mm256_sub_epi32(a.r[i], b.r[i]);
    return o;
  }
  friend SPARSEOPT_VEC_INLINE I32 shl_(const I32& a, int n) {
    I32 o;
    for (int i = 0; i < N; ++i) o.r[i] = _mm256_slli_epi32(a.r[i], n);
    return o;
  }
};

template <int N>
struct I64 {  // the bits of F64<N>
  __m256i r[N];
  friend SPARSEOPT_VEC_INLINE I64 operator+(const I64& a, int64_t s) {
    I64 o;
    for (int i = 0; i < N; ++i) o.r[i] = _mm256_add_epi64(a.r[i], _mm256_set1_epi64x(s));
    return o;
  }
  friend SPARSEOPT_VEC_INLINE I64 operator-(const I64& a, const I64& b) {
    I64 o;
    for (int i = 0; i < N; ++i) o.r[i] = _mm256_sub_epi64(a.r[i], b.r[i]);
    return o;
  }
  friend SPARSEOPT_VEC_INLINE I64 shl_(const I64& a, int n) {
    I64 o;
    for (int i = 0; i < N; ++i) o.r[i] = _mm256_slli_epi64(a.r[i], n);
    return o;
  }
};

// One definition of both float and double vectors: Traits gives the register type and the
// intrinsics; the operators and helpers are written once.
struct PsTraits {
  using Scalar = float;
  using Reg = __m256;
  template <int N>
  using Bits = I32<N>;
  static constexpr int kLanes = 8;
  static SPARSEOPT_VEC_INLINE Reg set1(float s) { return _mm256_set1_ps(s); }
  static SPARSEOPT_VEC_INLINE Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static SPARSEOPT_VEC_INLINE Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static SPARSEOPT_VEC_INLINE Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  // rules::mul_add_: fused (one rounding) in float
  static SPARSEOPT_VEC_INLINE Reg mul_add(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static SPARSEOPT_VEC_INLINE Reg div(Reg a, Reg b) { return _mm256_div_ps(a, b); }
  static SPARSEOPT_VEC_INLINE Reg sqrt(Reg a) { return _mm256_sqrt_ps(a); }
  static SPARSEOPT_VEC_INLINE Reg and_(Reg a, Reg b) { return _mm256_and_ps(a, b); }
  static SPARSEOPT_VEC_INLINE Reg andnot(Reg a, Reg b) { return _mm256_andnot_ps(a, b); }
  static SPARSEOPT_VEC_INLINE Reg or_(Reg a, Reg b) { return _mm256_or_ps(a, b); }
  static SPARSEOPT_VEC_INLINE Reg xor_(Reg a, Reg b) { return _mm256_xor_ps(a, b); }
  static SPARSEOPT_VEC_INLINE Reg lt(Reg a, Reg b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static SPARSEOPT_VEC_INLINE Reg unord(Reg a, Reg b) { return _mm256_cmp_ps(a, b, _CMP_UNORD_Q); }
  static SPARSEOPT_VEC_INLINE Reg blend(Reg a, Reg b, Reg m) { return _mm256_blendv_ps(a, b, m); }
  // (a > b) ? a : b, b when either is NaN (maxps)
  static SPARSEOPT_VEC_INLINE Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  // (a < b) ? a : b, b when either is NaN (minps)
  static SPARSEOPT_VEC_INLINE Reg min(Reg a, Reg b) { return _mm256_min_ps(a, b); }
  static SPARSEOPT_VEC_INLINE __m256i bits(Reg a) { return _mm256_castps_si256(a); }
  static SPARSEOPT_VEC_INLINE Reg from_bits(__m256i a) { return _mm256_castsi256_ps(a); }
  // sqrt in double, rounded once to float (sqrt_via_double_)
  static SPARSEOPT_VEC_INLINE Reg sqrt_via_double(Reg a) {
    const __m128 lo = _mm256_cvtpd_ps(_mm256_sqrt_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a))));
    const __m128 hi = _mm256_cvtpd_ps(_mm256_sqrt_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1))));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
  }
  static SPARSEOPT_VEC_INLINE void storeu(float* p, Reg a) { _mm256_storeu_ps(p, a); }
  static SPARSEOPT_VEC_INLINE Reg loadu(const float* p) { return _mm256_loadu_ps(p); }
};

struct PdTraits {
  using Scalar = double;
  using Reg = __m256d;
  template <int N>
  using Bits = I64<N>;
  static constexpr int kLanes = 4;
  static SPARSEOPT_VEC_INLINE Reg set1(double s) { return _mm256_set1_pd(s); }
  static SPARSEOPT_VEC_INLINE Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
  static SPARSEOPT_VEC_INLINE Reg sub(Reg a, Reg b) { return _mm256_sub_pd(a, b); }
  static SPARSEOPT_VEC_INLINE Reg mul(Reg a, Reg b) { return _mm256_mul_pd(a, b); }
  // rules::mul_add_: two roundings in double, as the scalar helper
  static SPARSEOPT_VEC_INLINE Reg mul_add(Reg a, Reg b, Reg c) { return add(mul(a, b), c); }
  static SPARSEOPT_VEC_INLINE Reg div(Reg a, Reg b) { return _mm256_div_pd(a, b); }
  static SPARSEOPT_VEC_INLINE Reg sqrt(Reg a) { return _mm256_sqrt_pd(a); }
  static SPARSEOPT_VEC_INLINE Reg and_(Reg a, Reg b) { return _mm256_and_pd(a, b); }
  static SPARSEOPT_VEC_INLINE Reg andnot(Reg a, Reg b) { return _mm256_andnot_pd(a, b); }
  static SPARSEOPT_VEC_INLINE Reg or_(Reg a, Reg b) { return _mm256_or_pd(a, b); }
  static SPARSEOPT_VEC_INLINE Reg xor_(Reg a, Reg b) { return _mm256_xor_pd(a, b); }
  static SPARSEOPT_VEC_INLINE Reg lt(Reg a, Reg b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
  static SPARSEOPT_VEC_INLINE Reg unord(Reg a, Reg b) { return _mm256_cmp_pd(a, b, _CMP_UNORD_Q); }
  static SPARSEOPT_VEC_INLINE Reg blend(Reg a, Reg b, Reg m) { return _mm256_blendv_pd(a, b, m); }
  static SPARSEOPT_VEC_INLINE Reg max(Reg a, Reg b) { return _mm256_max_pd(a, b); }
  static SPARSEOPT_VEC_INLINE Reg min(Reg a, Reg b) { return _mm256_min_pd(a, b); }
  static SPARSEOPT_VEC_INLINE __m256i bits(Reg a) { return _mm256_castpd_si256(a); }
  static SPARSEOPT_VEC_INLINE Reg from_bits(__m256i a) { return _mm256_castsi256_pd(a); }
  static SPARSEOPT_VEC_INLINE Reg sqrt_via_double(Reg a) { return _mm256_sqrt_pd(a); }
  static SPARSEOPT_VEC_INLINE void storeu(double* p, Reg a) { _mm256_storeu_pd(p, a); }
  static SPARSEOPT_VEC_INLINE Reg loadu(const double* p) { return _mm256_loadu_pd(p); }
};

template <class Tr, int N>
struct Vec {
  using Scalar = typename Tr::Scalar;
  using Reg = typename Tr::Reg;
  using Bits = typename Tr::template Bits<N>;
  static constexpr int kRegs = N;
  static constexpr int kLanes = N * Tr::kLanes;
  Reg r[N];

  Vec() = default;
  // Broadcast (implicit: the rules mix vectors with scalar coefficients and constants).
  SPARSEOPT_VEC_INLINE Vec(Scalar s) {  // NOLINT(google-explicit-constructor)
    for (int i = 0; i < N; ++i) r[i] = Tr::set1(s);
  }

// Each operation register by register (a macro, not a lambda: GCC 12 does not carry the
// file's AVX2 target into lambdas).
#define SPARSEOPT_VEC_MAP1(expr)                   \
  Vec o;                                           \
  for (int i = 0; i < N; ++i) {                    \
    const Reg x = a.r[i];                          \
    o.r[i] = (expr);                               \
  }                                                \
  return o
#define SPARSEOPT_VEC_MAP2(expr)                   \
  Vec o;                                           \
  for (int i = 0; i < N; ++i) {                    \
    const Reg x = a.r[i], y = b.r[i];              \
    o.r[i] = (expr);                               \
  }                                                \
  return o

  friend SPARSEOPT_VEC_INLINE Vec operator+(const Vec& a, const Vec& b) {
    SPARSEOPT_VEC_MAP2(Tr::add(x, y));
  }
  friend SPARSEOPT_VEC_INLINE Vec operator-(const Vec& a, const Vec& b) {
    SPARSEOPT_VEC_MAP2(Tr::sub(x, y));
  }
  friend SPARSEOPT_VEC_INLINE Vec operator*(const Vec& a, const Vec& b) {
    SPARSEOPT_VEC_MAP2(Tr::mul(x, y));
  }
  friend SPARSEOPT_VEC_INLINE Vec operator/(const Vec& a, const Vec& b) {
    SPARSEOPT_VEC_MAP2(Tr::div(x, y));
  }
  friend SPARSEOPT_VEC_INLINE Vec operator-(const Vec& a) {  // flips the sign bit, as -x does
    SPARSEOPT_VEC_MAP1(Tr::xor_(x, Tr::set1(Scalar(-0.0))));
  }

  // -- the helpers of csrc/rules/*.h, lane by lane -------------------------------------------
  friend SPARSEOPT_VEC_INLINE Bits bits_(const Vec& a) {
    Bits o;
    for (int i = 0; i < N; ++i) o.r[i] = Tr::bits(a.r[i]);
    return o;
  }
  // abs_bits_: clear the sign bit.
  friend SPARSEOPT_VEC_INLINE Vec abs_bits_(const Vec& a) {
    SPARSEOPT_VEC_MAP1(Tr::andnot(Tr::set1(Scalar(-0.0)), x));
  }
  // or_sign_of_(a, b): a (sign bit clear) with b's sign bit.
  friend SPARSEOPT_VEC_INLINE Vec or_sign_of_(const Vec& a, const Vec& b) {
    SPARSEOPT_VEC_MAP2(Tr::or_(x, Tr::and_(Tr::set1(Scalar(-0.0)), y)));
  }
  // abs_: x < 0 ? -x : x (keeps -0 and the sign of a NaN, like the scalar helper).
  friend SPARSEOPT_VEC_INLINE Vec abs_(const Vec& a) {
    SPARSEOPT_VEC_MAP1(Tr::blend(x, Tr::xor_(x, Tr::set1(Scalar(-0.0))),
                                 Tr::lt(x, Tr::set1(Scalar(0)))));
  }
  friend SPARSEOPT_VEC_INLINE Vec copysign_(const Vec& a, const Vec& b) {
    const Reg sign = Tr::set1(Scalar(-0.0));
    SPARSEOPT_VEC_MAP2(Tr::or_(Tr::andnot(sign, x), Tr::and_(sign, y)));
  }
  // d < 0 ? 0 : d  ==  (0 > d) ? 0 : d  ==  maxps(0, d) (d when d is NaN, -0 stays -0).
  friend SPARSEOPT_VEC_INLINE Vec zero_if_negative_(const Vec& a) {
    SPARSEOPT_VEC_MAP1(Tr::max(Tr::set1(Scalar(0)), x));
  }
  // min_or_bound_: a < b ? a : b, b when a is NaN (minps)
  friend SPARSEOPT_VEC_INLINE Vec min_or_bound_(const Vec& a, const Vec& b) {
    SPARSEOPT_VEC_MAP2(Tr::min(x, y));
  }
  // x != x ? x : 0
  friend SPARSEOPT_VEC_INLINE Vec nan_or_zero_(const Vec& a) {
    SPARSEOPT_VEC_MAP1(Tr::and_(Tr::unord(x, x), x));
  }
  friend SPARSEOPT_VEC_INLINE Vec mul_add_(const Vec& a, const Vec& b, const Vec& c) {
    Vec o;
    for (int i = 0; i < N; ++i) o.r[i] = Tr::mul_add(a.r[i], b.r[i], c.r[i]);
    return o;
  }
  friend SPARSEOPT_VEC_INLINE Vec sqrt_f_(const Vec& a) { SPARSEOPT_VEC_MAP1(Tr::sqrt(x)); }
  friend SPARSEOPT_VEC_INLINE Vec sqrt_via_double_(const Vec& a) {
    SPARSEOPT_VEC_MAP1(Tr::sqrt_via_double(x));
  }
#undef SPARSEOPT_VEC_MAP1
#undef SPARSEOPT_VEC_MAP2
  // pow_k_ lane by lane through the scalar helper (libm pow, as the scalar loop).
  friend SPARSEOPT_VEC_INLINE Vec pow_k_(const Vec& a, double k) {
    alignas(32) Scalar lanes[kLanes];
    for (int i = 0; i < N; ++i) Tr::storeu(lanes + i * Tr::kLanes, a.r[i]);
    for (int l = 0; l < kLanes; ++l) lanes[l] = rules::pow_k_(lanes[l], k);
    Vec o;
    for (int i = 0; i < N; ++i) o.r[i] = Tr::loadu(lanes + i * Tr::kLanes);
    return o;
  }
};

// from_bits_: the vector whose lanes have these bits (found by lookup on the bits' type).
template <int N>
SPARSEOPT_VEC_INLINE Vec<PsTraits, N> from_bits_(const I32<N>& b) {
  Vec<PsTraits, N> o;
  for (int i = 0; i < N; ++i) o.r[i] = PsTraits::from_bits(b.r[i]);
  return o;
}
template <int N>
SPARSEOPT_VEC_INLINE Vec<PdTraits, N> from_bits_(const I64<N>& b) {
  Vec<PdTraits, N> o;
  for (int i = 0; i < N; ++i) o.r[i] = PdTraits::from_bits(b.r[i]);
  return o;
}

#undef SPARSEOPT_VEC_INLINE

}  // namespace
}  // namespace cpu

namespace rules {
template <class Tr, int N>
struct MathScalar<cpu::Vec<Tr, N>> {
  using type = typename Tr::Scalar;
};
}  // namespace rules
}  // namespace sparseopt

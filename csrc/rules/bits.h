// Bit-level helpers shared by csrc/rules/obproxsg.h and csrc/rules/pdca.h (no torch here; the
// formulas they serve: docs/algorithms.md sections 6 and 7).
//
// GCC 12 with the default -ftrapping-math does not if-convert a select whose arm holds a
// floating-point operation, nor one after a float-to-int conversion, and then leaves the whole
// CPU loop scalar (10-30x slower on random data). Selecting on the bits (integer and/or), and
// building integers from bit patterns instead of conversions, keeps those loops vectorised.
// Bit casts are exact, so results stay bit-identical to the pure-PyTorch reference.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common.h"

// The per-element formula is large enough that GCC may decide not to inline it into the CPU
// loop (one call per element, no vectorisation: 10-30x slower); force it.
#ifndef SPARSEOPT_ALWAYS_INLINE
#if defined(__GNUC__) || defined(__clang__)
#define SPARSEOPT_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define SPARSEOPT_ALWAYS_INLINE inline
#endif
#endif

namespace sparseopt {
namespace rules {

// The bits of x as an integer, and back (bit casts: no conversion, so nothing can trap).
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE int32_t bits_(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_int(x);
#else
  int32_t out;
  std::memcpy(&out, &x, sizeof(out));
  return out;
#endif
}
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE int64_t bits_(double x) {
#ifdef __CUDA_ARCH__
  return static_cast<int64_t>(__double_as_longlong(x));
#else
  int64_t out;
  std::memcpy(&out, &x, sizeof(out));
  return out;
#endif
}
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE float from_bits_(int32_t b) {
#ifdef __CUDA_ARCH__
  return __int_as_float(b);
#else
  float out;
  std::memcpy(&out, &b, sizeof(out));
  return out;
#endif
}
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE double from_bits_(int64_t b) {
#ifdef __CUDA_ARCH__
  return __longlong_as_double(static_cast<long long>(b));
#else
  double out;
  std::memcpy(&out, &b, sizeof(out));
  return out;
#endif
}

// |x| by clearing the sign bit, as fabs and torch.abs do: +0 for -0 (common.h's abs_ keeps -0).
template <typename T>
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE T abs_bits_(T x) {
  using I = decltype(bits_(x));
  using U = std::make_unsigned_t<I>;
  constexpr I kMagnitude = static_cast<I>(~(U(1) << (8 * sizeof(I) - 1)));  // 0x7f..f
  return from_bits_(bits_(x) & kMagnitude);
}

// copysign(m, x) for an m whose sign bit is clear: m with x's sign bit or-ed in (one operation
// fewer than copysign on a CPU vector).
template <typename T>
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE T or_sign_of_(T m, T x) {
  using I = decltype(bits_(x));
  using U = std::make_unsigned_t<I>;
  constexpr I kSign = static_cast<I>(U(1) << (8 * sizeof(I) - 1));  // 0x80..0
  return from_bits_(bits_(m) | (bits_(x) & kSign));
}

// a * b + c with one rounding in float (a fused multiply-add: FMA3 on the CPU's vector path,
// fma_ elsewhere) and two in double (a product, then a sum).
// The pure-PyTorch reference replays both exactly: it rounds a float FMA correctly through
// float64 (sparseopt/reference/obprox_pdca.py, mul_add), which it could not do for double.
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE float mul_add_(float a, float b, float c) {
  return fma_(a, b, c);  // common.h
}
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE double mul_add_(double a, double b, double c) {
  return a * b + c;
}

// x << n computed as unsigned (a negative x shifts without undefined behaviour).
template <typename I>
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE I shl_(I x, int n) {
  using U = std::make_unsigned_t<I>;
  return static_cast<I>(static_cast<U>(x) << n);
}

// mask ? a : b for a loop-invariant all-ones / all-zero integer mask, on the bits.
template <typename T>
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE T select_bits_(decltype(bits_(T())) mask, T a, T b) {
  return from_bits_((bits_(a) & mask) | (bits_(b) & ~mask));
}

}  // namespace rules
}  // namespace sparseopt

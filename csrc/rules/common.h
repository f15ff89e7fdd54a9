// Shared scalar helpers for the update rules in csrc/rules/*.h (soft threshold, math type and
// rounding: docs/algorithms.md section 0).
//
// Every rule header is included by two loops: the CPU loop (g++, with torch) and the CUDA
// kernels (nvcc, *without* torch, so that `nvcc -c` checks a kernel in seconds on a machine
// with no CUDA torch). Hence nothing here may include a torch header.
//
// Numerical contract, relied on by the tests that compare kernels with sparseopt.reference
// bit for bit:
//   * per-element math runs in "opmath" (float for fp32/fp16/bf16 storage, double for fp64);
//   * per-tensor coefficients (lr*l1, sqrt(t)/gamma, ...) are computed in double on the host
//     or device and rounded to opmath once, exactly as torch rounds a Python scalar;
//   * every element-wise expression is evaluated in the order the reference writes it, with
//     floating-point contraction disabled (-ffp-contract=off, nvcc --fmad=false), so each
//     operation is one correctly rounded IEEE operation on both sides.
#pragma once

#include <cmath>

#ifndef C10_HOST_DEVICE
#if defined(__CUDACC__) || defined(__HIPCC__)
#define C10_HOST_DEVICE __host__ __device__
#else
#define C10_HOST_DEVICE
#endif
#endif

namespace sparseopt {
namespace rules {

C10_HOST_DEVICE inline float copysign_(float mag, float sgn) {
#ifdef __CUDA_ARCH__
  return copysignf(mag, sgn);
#else
  return std::copysign(mag, sgn);
#endif
}
C10_HOST_DEVICE inline double copysign_(double mag, double sgn) {
#ifdef __CUDA_ARCH__
  return ::copysign(mag, sgn);
#else
  return std::copysign(mag, sgn);
#endif
}

C10_HOST_DEVICE inline double sqrt_(double x) {
#ifdef __CUDA_ARCH__
  return ::sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// a*b + c rounded once (the rules call it only where the reference's torch op fuses).
C10_HOST_DEVICE inline float fma_(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
C10_HOST_DEVICE inline double fma_(double a, double b, double c) {
#ifdef __CUDA_ARCH__
  return ::fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// beta^t by exponentiation by squaring in double-double arithmetic (each factor carries about
// 100 significant bits; fma makes every product's error term exact on host and device alike),
// rounded to double once: the correctly rounded beta^t but within ~2^-90 of a rounding tie, the
// same bits on every device. A t that is not a whole number in [0, 2^53) takes pow.
C10_HOST_DEVICE inline double pow_exact_(double beta, double t) {
  if (!(t >= 0.0 && t < 9007199254740992.0) || double(static_cast<unsigned long long>(t)) != t) {
#ifdef __CUDA_ARCH__
    return ::pow(beta, t);
#else
    return std::pow(beta, t);
#endif
  }
  // (hi, lo) *= (bh, bl), renormalised: hi + lo is the product to ~2^-100 relative.
  auto mul = [](double& hi, double& lo, double bh, double bl) {
    const double p = hi * bh;
    const double e = fma_(hi, bh, -p) + (hi * bl + lo * bh);
    hi = p + e;
    lo = e - (hi - p);
  };
  double hi = 1.0, lo = 0.0, bh = beta, bl = 0.0;
  for (unsigned long long n = static_cast<unsigned long long>(t); n != 0; n >>= 1) {
    if (n & 1ull) mul(hi, lo, bh, bl);
    if (n > 1) mul(bh, bl, bh, bl);
  }
  return hi + lo;
}

// The bias corrections' beta^t and sqrt(1 - beta^t). On the host: libm's pow, as the reference
// computes them (`beta ** t`, `x ** 0.5` in Python), so the CPU loop equals it bit for bit. On a
// GPU the device's pow (CUDA's double pow: up to 2 ulp) is not used: pow_exact_ and the
// correctly rounded sqrt give the correctly rounded values, which equal libm's except where libm
// itself misrounds (tests/emulation: about 1 step count in 1,000, each checked against the exact
// rational power).
C10_HOST_DEVICE inline double pow_step_(double beta, double t) {
#ifdef __CUDA_ARCH__
  return pow_exact_(beta, t);
#else
  return std::pow(beta, t);
#endif
}
C10_HOST_DEVICE inline double sqrt_bias_correction_(double bc) {
#ifdef __CUDA_ARCH__
  return ::sqrt(bc);
#else
  return std::pow(bc, 0.5);
#endif
}

// The scalar type of a math type: T itself, or the lane type of one of the CPU loop's vector
// types (csrc/cpu/vec_avx2.h specialises it). Rules written over a math type V (operator()
// templated on V, coefficients in the scalar type) run unchanged on whole vectors there.
template <typename T>
struct MathScalar {
  using type = T;
};
template <typename T>
using math_scalar_t = typename MathScalar<T>::type;

// |x| without a libm call, so the CPU loop vectorizes; keeps NaN as NaN.
template <typename T>
C10_HOST_DEVICE inline T abs_(T x) {
  return x < T(0) ? -x : x;
}

// d < 0 ? 0 : d (NaN and -0 pass through unchanged).
template <typename T>
C10_HOST_DEVICE inline T zero_if_negative_(T d) {
  return d < T(0) ? T(0) : d;
}

// t < bound ? t : bound: bound for a NaN t (minps / minpd on the CPU's vectors).
template <typename T>
C10_HOST_DEVICE inline T min_or_bound_(T t, T bound) {
  return t < bound ? t : bound;
}

// x where x is NaN, else +0: adding it to a result keeps a NaN input visible.
template <typename T>
C10_HOST_DEVICE inline T nan_or_zero_(T x) {
  return x != x ? x : T(0);
}

// The l1 proximal map soft(u, a) = sign(u) * max(|u| - a, 0).
// Exact zero wherever |u| <= a. A NaN in u stays NaN (a diverged run must not be hidden behind
// zeros). The zero keeps the sign of u, as torch.copysign(clamp_min(|u| - a, 0), u) does.
// (V may be a CPU vector type, a the scalar threshold.) |u| stays abs_: with std::fabs there GCC
// 12 left the RDA loop scalar (iRDA 10 -> 25 ms in benchmarks/bench_optim.py).
template <typename V, typename T>
C10_HOST_DEVICE inline V soft_threshold(V u, T a) {
  const V d = abs_(u) - a;
  return copysign_(zero_if_negative_(d), u);
}

}  // namespace rules
}  // namespace sparseopt

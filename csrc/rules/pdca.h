// pDCA_e with the exponential l0 surrogate (docs/algorithms.md section 7; Wen, Chen, Pong 2018;
// the reproduction note's Algorithm 2). Step counter: docs/algorithms.md section 0.
//
// Penalty lambda * sum r(x_i), r(t) = 1 - exp(-theta |t|) = P1 - P2 with P1 = theta |t|, so
// xi(x) = grad P2(x) = theta * sign(x) * (1 - exp(-theta |x|)). One fused step per element,
// slots P (the parameter, holding the extrapolated point y_t), G (grad f(y_t)), X (x_t):
//
//   g     <- g + wd * y                                   (weight_decay != 0: l2 inside f)
//   xi     = theta * sign(x) * (1 - exp(-theta |x|))
//   x_new  = soft(y - lr * (g - l1 * xi), lr * l1 * theta)
//   y_new  = x_new + beta * (x_new - x)
//   X <- x_new;  P <- y_new
//
// beta is a per-step scalar of the FISTA recurrence k_{t+1} = (1 + sqrt(1 + 4 k_t^2)) / 2,
// beta_t = (k_{t-1} - 1) / k_t from k_{-1} = k_0 = 1, indexed as in the paper: step t makes
// x_t and then extrapolates with beta_t (0, 0.28, 0.43, ... after steps 1, 2, 3). After step n
// with n % restart == 0 the pair is reset, k_{n-1} = k_n = 1, so beta depends only on t % restart.
// Python tabulates it once (betas[m] = beta_m for m = 0 .. restart-1, a float64 tensor on the
// parameters' device) and the kernel picks betas[t % restart] from the device step counter: no
// host sync per step, and a step GradScaler skips does not advance the recurrence.
//
// exp is computed here from + - *, mul_add_ (bits.h: a fused multiply-add in float, a product
// and a sum in double) and bit casts only (Cody-Waite range reduction, a Taylor polynomial
// evaluated by Horner, scaling by an exactly built power of two), not by libm, so the
// pure-PyTorch reference can replay the very same operations and the CPU kernel equals it bit for
// bit (torch's own exp is SLEEF on the CPU, whose last bit need not agree with libm's). The
// float FMAs take 9 of the step's roughly 45 vector operations away (the CPU loop is
// compute-bound: benchmarks/RESULTS.md). exp(-t) is within 1.5 ulp on [0, 40] in float and
// in double (measured at most 0.86 and 1.13 ulp on the test's grid, float 1.12 before the FMAs;
// tests/test_obprox_pdca.py checks the bound). The argument t = theta|x| is clamped to [0, 40]:
// 1 - exp(-40) rounds to 1 in both float and double, so the clamp changes no result.
// The CPU runs it on AVX2 vectors (csrc/cpu/vector_kernels.h): the same operations lane by
// lane, so the same bits.
#pragma once

#include <cstdint>
#include <type_traits>

#include "bits.h"
#include "common.h"

namespace sparseopt {
namespace rules {

// Constants of exp_neg_clamped; the reference (sparseopt/reference/obprox_pdca.py) has the same
// numbers. ln2 is split in a high part with few significant bits (k * ln2_hi is exact) and a low
// part. Polynomial: Taylor coefficients 1/j!, degree 7 for float (|r| <= 0.347: error < 5e-9),
// degree 13 for double (error < 5e-18).
struct ExpConstants {
  static constexpr double kLog2e = 1.4426950408889634;
  static constexpr double kLn2HiF = 0.693359375;
  static constexpr double kLn2LoF = -2.12194440e-4;
  static constexpr double kLn2HiD = 6.93147180369123816490e-01;
  static constexpr double kLn2LoD = 1.90821492927058770002e-10;
  static constexpr double kMaxArg = 40.0;  // exp(-t) for t clamped to [0, 40]
  // 1.5 * 2^23 and 1.5 * 2^52: adding one rounds |q| < 2^22 to the nearest integer k, which then
  // sits in the low mantissa bits (bits(q + magic) = bits(magic) + k).
  static constexpr double kMagicF = 12582912.0;
  static constexpr double kMagicD = 6755399441055744.0;
};

// T is float or double, or a CPU vector of them (the same operations on every lane).
// The Taylor polynomial of exp(-s) = sum_j (-1)^j s^j / j!, by Horner: the alternating signs
// sit in the coefficients, so a positive s takes no negation. (These are exactly the roundings
// of Horner on r = -s with the plain coefficients: each step is fma(-a, b, -c) = -fma(a, b, c).)
template <typename T>
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE T exp_neg_horner_(T s) {
  using S = math_scalar_t<T>;
  constexpr bool kDouble = sizeof(S) == 8;
  constexpr int kDegree = kDouble ? 13 : 7;
  // (-1)^j / j! for j = 0..13
  constexpr double coeff[14] = {1.0,
                                -1.0,
                                1.0 / 2.0,
                                -1.0 / 6.0,
                                1.0 / 24.0,
                                -1.0 / 120.0,
                                1.0 / 720.0,
                                -1.0 / 5040.0,
                                1.0 / 40320.0,
                                -1.0 / 362880.0,
                                1.0 / 3628800.0,
                                -1.0 / 39916800.0,
                                1.0 / 479001600.0,
                                -1.0 / 6227020800.0};
  T p = T(S(coeff[kDegree]));
  for (int j = kDegree - 1; j >= 0; --j) p = mul_add_(p, s, T(S(coeff[j])));
  return p;
}

// exp(-t) = exp_neg_horner_(s) * scale with t = k ln2 + s, scale = 2^-k: the range reduction.
template <typename T>
struct ExpReduced {
  T s, scale;
};

// The range reduction of exp(-t) for t >= +0, or a NaN, which is treated as the clamp bound
// (callers handle NaN themselves).
// k = round(t / ln2) by the magic-number addition and 2^-k from the same sum's bits: no
// float-to-int conversion, whose possible trap keeps GCC (with the default -ftrapping-math) from
// vectorising the CPU loop. (The same reduction written for exp(a), a = -t, gives -k, -s and
// the same 2^-k: round-to-nearest-even is symmetric and magic is even.)
template <typename T>
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE ExpReduced<T> exp_reduce_neg_clamped(T t) {
  using S = math_scalar_t<T>;
  constexpr bool kDouble = sizeof(S) == 8;
  constexpr int kMantissa = kDouble ? 52 : 23;
  constexpr int kBias = kDouble ? 1023 : 127;
  const T magic = T(S(kDouble ? ExpConstants::kMagicD : ExpConstants::kMagicF));
  // t = min(t, 40), NaN (of either sign: 0 * inf is a NaN with the sign bit set) -> 40, as the
  // reference's `t <= 40 ? t : 40`
  t = min_or_bound_(t, T(S(ExpConstants::kMaxArg)));
  const T q = mul_add_(t, T(S(ExpConstants::kLog2e)), magic);
  const T k = q - magic;
  T s = mul_add_(k, T(S(-(kDouble ? ExpConstants::kLn2HiD : ExpConstants::kLn2HiF))), t);
  s = mul_add_(k, T(S(-(kDouble ? ExpConstants::kLn2LoD : ExpConstants::kLn2LoF))), s);
  // bits(q) = bits(magic) + k, k in [0, 58]; 2^-k has exponent field kBias - k
  const auto neg_k_biased = (bits_(magic) + kBias) - bits_(q);
  return {s, from_bits_(shl_(neg_k_biased, kMantissa))};
}

template <typename T>
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE T exp_from_reduced_(const ExpReduced<T>& q) {
  return exp_neg_horner_(q.s) * q.scale;
}

// exp(-t) for t >= +0 or NaN, t clamped to <= 40 (see above).
template <typename T>
C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE T exp_neg_clamped(T t) {
  return exp_from_reduced_(exp_reduce_neg_clamped(t));
}

template <bool kWeightDecay>
struct PdcaOp {
  enum Slot { P = 0, G = 1, X = 2 };
  static constexpr int kDepth = 3;
  static constexpr int kGrad = G;
  static constexpr unsigned kWrites = (1u << P) | (1u << X);
  static constexpr bool kUsesStep = true;

  double lr;
  double l1;
  double theta;
  double weight_decay;
  const double* betas;  // betas[m], m = t % period, on the parameters' device
  long long period;     // = restart >= 1

  template <typename T>
  struct Coeffs {
    T lr, l1, theta, threshold, wd, beta;
  };

  template <typename T>
  C10_HOST_DEVICE Coeffs<T> coeffs(double step) const {
    const long long m = static_cast<long long>(step) % period;  // the beta of step t: beta_t
    return {T(lr), T(l1), T(theta), T(lr * l1 * theta), T(weight_decay), T(betas[m])};
  }

  // The formula in stages: exp's range reduction of -theta|x| (pre1), xi from it (pre2), then
  // the step (apply). operator() runs them back to back per element; the CPU's vector loop runs
  // each stage over a block of elements before the next (the same operations per element: see
  // csrc/cpu/vector_kernels_avx2.cpp for why). Val is T, or a CPU vector of T
  // (csrc/cpu/vec_avx2.h): one formula for every loop.
  static constexpr int kPreSlot = X;

  template <typename Val, typename T>
  C10_HOST_DEVICE static SPARSEOPT_ALWAYS_INLINE ExpReduced<Val> pre1(Val x, const Coeffs<T>& c) {
    // theta*|x| >= +0 (|x| = +0 for x = -0, as torch.abs gives; theta >= +0 in the math type)
    // or NaN
    return exp_reduce_neg_clamped(c.theta * abs_bits_(x));
  }

  // xi = theta * sign(x) * (1 - exp(-theta |x|)), NaN for NaN.
  template <typename Val, typename T>
  C10_HOST_DEVICE static SPARSEOPT_ALWAYS_INLINE Val pre2(const ExpReduced<Val>& reduced, Val x,
                                                      const Coeffs<T>& c) {
    const Val e = exp_from_reduced_(reduced);
    // theta * (1 - e) >= +0 (theta >= +0 in the math type, a tiny theta rounding to 0; e <= 1),
    // so copysign is an or of x's sign bit.
    // NaN stays NaN; written as an addition (xi + 0 elsewhere) because a select here kept
    // GCC 12 from vectorising the loop.
    return or_sign_of_(c.theta * (T(1) - e), x) + nan_or_zero_(x);
  }

  template <typename Val, typename T>
  C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE void apply(Val (&v)[kDepth], const Coeffs<T>& c,
                                                  Val xi) const {
    const Val y = v[P];
    const Val x = v[X];
    Val g = v[G];
    if (kWeightDecay) g = g + c.wd * y;
    const Val x_new = soft_threshold(y - c.lr * (g - c.l1 * xi), c.threshold);
    v[P] = x_new + c.beta * (x_new - x);
    v[X] = x_new;
  }

  template <typename Val, typename T>
  C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE void operator()(Val (&v)[kDepth],
                                                       const Coeffs<T>& c) const {
    apply(v, c, pre2(pre1(v[X], c), v[X], c));
  }
};

}  // namespace rules
}  // namespace sparseopt

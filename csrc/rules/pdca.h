// pDCA_e with the exponential l0 surrogate (docs/algorithms.md section 7; Wen, Chen, Pong 2018;
// the reproduction note's Algorithm 2).
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
// beta_t = (k_{t-1} - 1) / k_t, restarted every `restart` steps. It depends only on the position
// of the step inside the restart period, so Python tabulates it once (betas[m] for
// m = 0 .. restart-1, a float64 tensor on the parameters' device) and the kernel picks
// betas[(t - 1) % restart] from the device step counter: no host sync per step, and a step
// GradScaler skips does not advance the recurrence.
//
// exp is computed here from + - * and floor only (Cody-Waite range reduction, a Taylor
// polynomial evaluated by Horner, scaling by an exactly built power of two), not by libm, so the
// pure-PyTorch reference can replay the very same operations and the CPU kernel equals it bit for
// bit (torch's own exp is SLEEF on the CPU, whose last bit need not agree with libm's). It is
// accurate to about 1 ulp of the math type. The argument -theta|x| is clamped to [-40, 0]:
// 1 - exp(-40) rounds to 1 in both float and double, so the clamp changes no result.
#pragma once

#include <cstdint>
#include <cstring>

#include "common.h"

namespace sparseopt {
namespace rules {

C10_HOST_DEVICE inline float floor_(float x) {
#ifdef __CUDA_ARCH__
  return floorf(x);
#else
  return std::floor(x);
#endif
}
C10_HOST_DEVICE inline double floor_(double x) {
#ifdef __CUDA_ARCH__
  return ::floor(x);
#else
  return std::floor(x);
#endif
}

// 2^k for an integer-valued k in [-58, 0], built from its bits (exact).
C10_HOST_DEVICE inline float exp2i_(float k) {
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
#ifdef __CUDA_ARCH__
  return __int_as_float(bits);
#else
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
#endif
}
C10_HOST_DEVICE inline double exp2i_(double k) {
  const int64_t bits = static_cast<int64_t>(static_cast<int64_t>(k) + 1023) << 52;
#ifdef __CUDA_ARCH__
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
#endif
}

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
  static constexpr double kMinArg = -40.0;
};

template <typename T>
C10_HOST_DEVICE inline T exp_horner_(T r) {
  constexpr bool kDouble = sizeof(T) == 8;
  constexpr int kDegree = kDouble ? 13 : 7;
  // 1/j! for j = 0..13
  constexpr double inv_fact[14] = {1.0,
                                   1.0,
                                   1.0 / 2.0,
                                   1.0 / 6.0,
                                   1.0 / 24.0,
                                   1.0 / 120.0,
                                   1.0 / 720.0,
                                   1.0 / 5040.0,
                                   1.0 / 40320.0,
                                   1.0 / 362880.0,
                                   1.0 / 3628800.0,
                                   1.0 / 39916800.0,
                                   1.0 / 479001600.0,
                                   1.0 / 6227020800.0};
  T p = T(inv_fact[kDegree]);
  for (int j = kDegree - 1; j >= 0; --j) p = p * r + T(inv_fact[j]);
  return p;
}

// exp(a) for a <= 0 (a NaN is treated as the clamp bound; callers handle NaN themselves).
template <typename T>
C10_HOST_DEVICE inline T exp_neg_clamped(T a) {
  constexpr bool kDouble = sizeof(T) == 8;
  a = a >= T(ExpConstants::kMinArg) ? a : T(ExpConstants::kMinArg);
  const T k = floor_(a * T(ExpConstants::kLog2e) + T(0.5));
  T r = a - k * T(kDouble ? ExpConstants::kLn2HiD : ExpConstants::kLn2HiF);
  r = r - k * T(kDouble ? ExpConstants::kLn2LoD : ExpConstants::kLn2LoF);
  return exp_horner_(r) * exp2i_(k);
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
  const double* betas;  // betas[m], m = (t - 1) % period, on the parameters' device
  long long period;     // = restart >= 1

  template <typename T>
  struct Coeffs {
    T lr, l1, theta, threshold, wd, beta;
  };

  template <typename T>
  C10_HOST_DEVICE Coeffs<T> coeffs(double step) const {
    const long long m = (static_cast<long long>(step) - 1) % period;
    return {T(lr), T(l1), T(theta), T(lr * l1 * theta), T(weight_decay), T(betas[m])};
  }

  template <typename T>
  C10_HOST_DEVICE void operator()(T (&v)[kDepth], const Coeffs<T>& c) const {
    const T y = v[P];
    const T x = v[X];
    T g = v[G];
    if (kWeightDecay) g = g + c.wd * y;
    const T e = exp_neg_clamped(-(c.theta * abs_(x)));
    T xi = copysign_(c.theta * (T(1) - e), x);
    xi = x != x ? x : xi;  // NaN stays NaN
    const T x_new = soft_threshold(y - c.lr * (g - c.l1 * xi), c.threshold);
    v[P] = x_new + c.beta * (x_new - x);
    v[X] = x_new;
  }
};

}  // namespace rules
}  // namespace sparseopt

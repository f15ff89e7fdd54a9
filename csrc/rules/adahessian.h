// AdaHessian (docs/algorithms.md section 9; Yao et al. 2020) with the Hutchinson diagonal.
//
// Two fused passes per step. The first forms the Hessian-diagonal estimate from a Rademacher
// probe z and the Hessian-vector product Hz (computed by autograd), per row of `row_len`
// elements (the kernel's spatial taps of a conv weight; 1 for any other parameter):
//
//   D[row] <- (accumulate ? D[row] : 0) + weight * (sum_k |z_k * Hz_k|) / row_len
//
// (weight = 1/n_samples averages several probes). The second is the element-wise update:
//
//   m <- b1*m + (1-b1)*g;   v <- b2*v + (1-b2)*D*D
//   denom = (sqrt(v) * (1/sqrt(1-b2^t)))^k + eps          (k = hessian_power; k = 1: no pow)
//   w <- w - ((lr/(1-b1^t)) * m) / denom - (lr*wd) * w
//
// lr/(1-b1^t) and 1/sqrt(1-b2^t) are computed once per tensor in double and rounded once to the
// math type, so each element takes one division and one square root. The formula sheet's
// literal form divides three times per element; on the CPU the divider bounded the loop (one
// core, data in L2: fp32 0.74 -> 0.58 ns/element, bf16 1.25 -> 1.0). The two differ by a few
// rounding errors per step, which the test against a straightforward implementation allows.
#pragma once

#include <cstdint>

#include "common.h"

namespace sparseopt {
namespace rules {

C10_HOST_DEVICE inline float sqrt_f_(float x) {
#ifdef __CUDA_ARCH__
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}
C10_HOST_DEVICE inline double sqrt_f_(double x) { return sqrt_(x); }

// sqrt(x) evaluated in double and rounded once to the math type (hessian_power = 0.5).
C10_HOST_DEVICE inline float sqrt_via_double_(float x) {
  return static_cast<float>(sqrt_(static_cast<double>(x)));
}
C10_HOST_DEVICE inline double sqrt_via_double_(double x) { return sqrt_(x); }

// x^k for x >= 0 computed in double and rounded once. For float/half/bfloat16 storage (float
// math) the reference, which does the same with torch.pow, agrees to the last bit whichever pow
// evaluates it (two double results a few ulp apart round to the same float but with
// probability ~2^-27). For double math the final rounding is pow's own: torch's CPU pow is
// SLEEF (<= 1 ulp) on full vectors and libm on the tail, so for k other than 1 and 0.5 the
// reference and this kernel agree to a few ulp only. k = 0.5 is the square root, correctly
// rounded on both sides (torch.pow special-cases it the same way), so it stays bit-exact: the
// op takes it as its own case (HessianPower::kHalf).
template <typename T>
C10_HOST_DEVICE inline T pow_k_(T x, double k) {
#ifdef __CUDA_ARCH__
  return T(::pow(double(x), k));
#else
  return T(std::pow(double(x), k));
#endif
}

// Storage -> math type by a plain conversion: what the CPU loop uses (c10::Half and
// c10::BFloat16 convert implicitly, rounding to nearest even).
template <typename T>
struct CastTo {
  template <typename S>
  C10_HOST_DEVICE T operator()(S x) const {
    return static_cast<T>(x);
  }
};

// One row of the Hutchinson pass (opmath T): the mean of |z*hz| over the row. `to_math` reads a
// storage element as T. The CUDA kernel passes its to_math (__half2float, __bfloat162float):
// torch's CUDAExtension builds with -D__CUDA_NO_HALF_CONVERSIONS__ and
// -D__CUDA_NO_BFLOAT16_CONVERSIONS__, so __half and __nv_bfloat16 have no implicit conversion
// there and a plain cast does not compile.
template <typename T, typename S, typename ToMath = CastTo<T>>
C10_HOST_DEVICE inline T hutchinson_row_mean(const S* z, const S* hz, int64_t row_len,
                                             ToMath to_math = ToMath()) {
  T sum = T(0);
  for (int64_t k = 0; k < row_len; ++k) sum = sum + abs_(to_math(z[k]) * to_math(hz[k]));
  return sum / T(row_len);
}

// Which power the denominator takes, fixed per op call so that the element loop has no branch
// on it (a branch there stopped the CPU loop from vectorising: 3.5x slower for every k).
enum class HessianPower { kOne, kHalf, kOther };

template <HessianPower kPower>
struct AdaHessianOp {
  enum Slot { W = 0, G = 1, M = 2, V = 3, D = 4 };
  static constexpr int kDepth = 5;
  static constexpr int kGrad = G;
  static constexpr unsigned kWrites = (1u << W) | (1u << M) | (1u << V);
  static constexpr bool kUsesStep = true;

  double lr, beta1, beta2, eps, weight_decay, hessian_power;

  template <typename T>
  struct Coeffs {
    T b1, one_minus_b1, b2, one_minus_b2, step_size, inv_bc2_sqrt, lr_wd, eps;
    double k;
  };

  template <typename T>
  C10_HOST_DEVICE Coeffs<T> coeffs(double step) const {
    const double bc1 = 1 - pow_step_(beta1, step), bc2 = 1 - pow_step_(beta2, step);
    // sqrt(1 - b2^t) as the reference's `(1 - beta2**t) ** 0.5` (common.h), as Adam's.
    return {T(beta1), T(1 - beta1), T(beta2), T(1 - beta2), T(lr / bc1),
            T(1 / sqrt_bias_correction_(bc2)), T(lr * weight_decay), T(eps), hessian_power};
  }

  // Val is T, or a CPU vector of T (csrc/cpu/vec_avx2.h): one formula for every loop.
  template <typename Val, typename T>
  C10_HOST_DEVICE void operator()(Val (&v)[kDepth], const Coeffs<T>& c) const {
    const Val g = v[G];
    const Val m = c.b1 * v[M] + c.one_minus_b1 * g;
    const Val sq = c.b2 * v[V] + c.one_minus_b2 * (v[D] * v[D]);
    Val base = sqrt_f_(sq) * c.inv_bc2_sqrt;
    if constexpr (kPower == HessianPower::kHalf) {
      base = sqrt_via_double_(base);
    } else if constexpr (kPower == HessianPower::kOther) {
      base = pow_k_(base, c.k);
    }
    const Val denom = base + c.eps;
    v[W] = v[W] - (c.step_size * m) / denom - c.lr_wd * v[W];
    v[M] = m;
    v[V] = sq;
  }
};

}  // namespace rules
}  // namespace sparseopt

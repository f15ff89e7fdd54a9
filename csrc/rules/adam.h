// Adam / AdamW (docs/algorithms.md section 8), operation for operation as torch.optim.Adam's
// single-tensor path, so that fp32 results are bit-equal to torch.optim.Adam(foreach=False):
//
//   g  = maximize ? -g : g
//   g  = fma(wd, w, g)                         (Adam: g.add(w, alpha=wd))
//   w  = w * (1 - lr*wd)                       (AdamW: w.mul_(1 - lr*wd))
//   m  = fma(1-b1, g - m, m)                   (m.lerp_(g, 1-b1); torch's lerp for weight < .5)
//   v  = fma((1-b2)*g, g, v*b2)                (v.mul_(b2).addcmul_(g, g, value=1-b2))
//   vmax = max(vmax, v)                        (amsgrad; the denominator then uses vmax)
//   d  = sqrt(v) / sqrt(1-b2^t) + eps
//   w  = w + (-lr/(1-b1^t) * m) / d            (w.addcdiv_(m, d, value=-lr/(1-b1^t)))
//   w  = soft(w, lr*l1)                        (optional l1 prox, for exact zeros)
//
// torch's CPU kernels for lerp, addcmul and add(alpha) fuse a multiply-add (one rounding);
// this header calls fma explicitly at exactly those places (the rest of the build has
// contraction off), and the reference uses those same torch ops.
#pragma once

#include "common.h"

namespace sparseopt {
namespace rules {

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
C10_HOST_DEVICE inline float sqrt_(float x) {
#ifdef __CUDA_ARCH__
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}
C10_HOST_DEVICE inline double pow_(double x, double y) {
#ifdef __CUDA_ARCH__
  return ::pow(x, y);
#else
  return std::pow(x, y);
#endif
}

// torch's lerp(self, end, weight): the form depends on |weight| < 0.5.
template <typename T>
C10_HOST_DEVICE inline T lerp_(T self, T end, T weight) {
  return abs_(weight) < T(0.5) ? fma_(weight, end - self, self)
                               : fma_(weight - T(1), end - self, end);
}

enum class WeightDecay { kNone = 0, kL2 = 1, kDecoupled = 2 };

template <bool kAmsgrad, WeightDecay kWd>
struct AdamOp {
  enum Slot { W = 0, G = 1, M = 2, V = 3, VMAX = 4 };
  static constexpr int kDepth = kAmsgrad ? 5 : 4;
  static constexpr int kGrad = G;
  static constexpr unsigned kWrites =
      (1u << W) | (1u << M) | (1u << V) | (kAmsgrad ? (1u << VMAX) : 0u);
  static constexpr bool kUsesStep = true;

  double lr, beta1, beta2, eps, weight_decay, l1;
  bool maximize;

  template <typename T>
  struct Coeffs {
    T one_minus_b1, b2, one_minus_b2, bc2_sqrt, neg_step_size, eps, wd, decay, threshold;
    bool maximize, prox;
  };

  template <typename T>
  C10_HOST_DEVICE Coeffs<T> coeffs(double step) const {
    const double bc1 = 1 - pow_(beta1, step);
    const double bc2 = 1 - pow_(beta2, step);
    return {T(1 - beta1),        T(beta2),          T(1 - beta2), T(pow_(bc2, 0.5)),
            T(-(lr / bc1)),      T(eps),            T(weight_decay),
            T(1 - lr * weight_decay), T(lr * l1),   maximize,     l1 > 0};
  }

  template <typename T>
  C10_HOST_DEVICE void operator()(T (&v)[kDepth], const Coeffs<T>& c) const {
    T g = c.maximize ? -v[G] : v[G];
    T w = v[W];
    if (kWd == WeightDecay::kL2) g = fma_(c.wd, w, g);
    if (kWd == WeightDecay::kDecoupled) w = w * c.decay;
    const T m = lerp_(v[M], g, c.one_minus_b1);
    const T sq = fma_(c.one_minus_b2 * g, g, v[V] * c.b2);
    T denom_src = sq;
    if constexpr (kAmsgrad) {
      const T vmax = v[kDepth - 1] < sq ? sq : v[kDepth - 1];  // torch.maximum; NaN below
      v[kDepth - 1] = (sq != sq || v[kDepth - 1] != v[kDepth - 1]) ? sq + v[kDepth - 1] : vmax;
      denom_src = v[kDepth - 1];
    }
    const T denom = sqrt_(denom_src) / c.bc2_sqrt + c.eps;
    w = w + (c.neg_step_size * m) / denom;
    if (c.prox) w = soft_threshold(w, c.threshold);
    v[W] = w;
    v[M] = m;
    v[V] = sq;
  }
};

}  // namespace rules
}  // namespace sparseopt

// Adam / AdamW (docs/algorithms.md section 8), operation for operation as torch.optim.Adam's
// single-tensor path, so that fp32 results are bit-equal to torch.optim.Adam(foreach=False):
//
//   g  = maximize ? -g : g
//   g  = fma(wd, w, g)                         (Adam: g.add(w, alpha=wd))
//   w  = w * (1 - lr*wd)                       (AdamW: w.mul_(1 - lr*wd))
//   m  = fma(1-b1, g - m, m) or fma(-b1, g - m, g)   (m.lerp_(g, 1-b1), torch's two forms)
//   v  = fma((1-b2)*g, g, v*b2)                (v.mul_(b2).addcmul_(g, g, value=1-b2))
//   vmax = max(vmax, v)                        (amsgrad; the denominator then uses vmax)
//   d  = sqrt(v) / sqrt(1-b2^t) + eps
//   w  = w + (-lr/(1-b1^t) * m) / d            (w.addcdiv_(m, d, value=-lr/(1-b1^t)))
//   w  = soft(w, lr*l1)                        (optional l1 prox, for exact zeros)
//
// torch's CPU kernels for lerp, addcmul and add(alpha) fuse a multiply-add (one rounding);
// this header calls fma explicitly at exactly those places (the rest of the build has
// contraction off), and the reference uses those same torch ops.
//
// On a GPU (__CUDA_ARCH__) the reference's torch ops run torch's CUDA kernels, which round
// differently in two places; the kernel follows them there:
//   addcmul  v.addcmul_(g, g, value=a): torch's CUDA pointwise_op_impl rounds g*g first, then
//            one fma: fma(a, g*g, v*b2) (a == 1: fma(g, g, v*b2)); the CPU rounds a*g first.
//   addcdiv  w.addcdiv_(m, d, value=s): CUDA rounds m/d first, then fma(s, m/d, w); the CPU
//            computes w + (s*m)/d.
// lerp and add(alpha) are the same expressions there (torch's CUDA lerp and add are written
// a + w*b, which nvcc contracts to the fma the CPU kernels call; 1 - w and w - 1 round to
// exact negatives of each other). The bias corrections use pow_step_ and
// sqrt_bias_correction_ (common.h), not the device's pow. None of this has run on a GPU yet:
// the CUDA emulation compiles the host branches (README "CUDA numerics").
#pragma once

#include "common.h"

namespace sparseopt {
namespace rules {

C10_HOST_DEVICE inline float sqrt_(float x) {
#ifdef __CUDA_ARCH__
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}
// torch's lerp(self, end, weight): the form depends on |weight| < 0.5.
template <typename T>
C10_HOST_DEVICE inline T lerp_(T self, T end, T weight) {
  return abs_(weight) < T(0.5) ? fma_(weight, end - self, self)
                               : fma_(weight - T(1), end - self, end);
}

enum class WeightDecay { kNone = 0, kL2 = 1, kDecoupled = 2 };

// kLerpFromSelf: |1 - beta1| < 0.5 in the math type, i.e. beta1 > 0.5 (torch's lerp switches
// form there); a template flag rather than a per-element select so that the CPU loop vectorises.
template <bool kAmsgrad, WeightDecay kWd, bool kLerpFromSelf = true>
struct AdamOp {
  enum Slot { W = 0, G = 1, M = 2, V = 3, VMAX = 4 };
  static constexpr int kDepth = kAmsgrad ? 5 : 4;
  static constexpr int kGrad = G;
  static constexpr unsigned kWrites =
      (1u << W) | (1u << M) | (1u << V) | (kAmsgrad ? (1u << VMAX) : 0u);
  static constexpr bool kUsesStep = true;

  double lr, beta1, beta2, eps, weight_decay, l1;
  bool maximize;

  // The runtime flags (maximize, l1) are folded into coefficients here, once per tensor, so
  // that the per-element formula below has no branch and the CPU loop vectorises; the values
  // are exactly those of the plain branches.
  template <typename T>
  struct Coeffs {
    T grad_sign, lerp_weight, b2, one_minus_b2, bc2_sqrt, neg_step_size, eps, wd, decay,
        threshold;
  };

  template <typename T>
  C10_HOST_DEVICE Coeffs<T> coeffs(double step) const {
    const double bc1 = 1 - pow_step_(beta1, step);
    const double bc2 = 1 - pow_step_(beta2, step);
    const T w = T(1 - beta1);
    // torch's lerp: self + w (end - self) for |w| < 0.5, else end + (w - 1) (end - self).
    return {T(maximize ? -1 : 1),     kLerpFromSelf ? w : T(w - T(1)),
            T(beta2),                 T(1 - beta2),
            T(sqrt_bias_correction_(bc2)), T(-(lr / bc1)),
            T(eps),                   T(weight_decay),
            T(1 - lr * weight_decay), T(l1 > 0 ? lr * l1 : 0.0)};
  }

  template <typename T>
  C10_HOST_DEVICE void operator()(T (&v)[kDepth], const Coeffs<T>& c) const {
    T g = v[G] * c.grad_sign;  // -g for maximize (times -1 is exact)
    T w = v[W];
    if (kWd == WeightDecay::kL2) g = fma_(c.wd, w, g);
    if (kWd == WeightDecay::kDecoupled) w = w * c.decay;
    const T m_old = v[M];
    const T m = fma_(c.lerp_weight, g - m_old, kLerpFromSelf ? m_old : g);  // m.lerp_(g, 1-b1)
#ifdef __CUDA_ARCH__
    const T sq = c.one_minus_b2 == T(1) ? fma_(g, g, v[V] * c.b2)
                                        : fma_(c.one_minus_b2, g * g, v[V] * c.b2);
#else
    const T sq = fma_(c.one_minus_b2 * g, g, v[V] * c.b2);
#endif
    T denom_src = sq;
    if constexpr (kAmsgrad) {
      // torch.maximum, which propagates a NaN: |sq| + |old| is NaN iff one of them is, and one
      // comparison keeps the loop branch-free. (The absolute values matter: a max_exp_avg_sq
      // of -inf, which a corrupted or hand-made state can hold, made sq + old = inf - inf a NaN
      // where torch.maximum gives inf.)
      const T old = v[kDepth - 1];
      const T vmax = old < sq ? sq : old;
      const T sum = abs_(sq) + abs_(old);
      const T next = sum != sum ? sum : vmax;
      v[kDepth - 1] = next;
      denom_src = next;
    }
    const T denom = sqrt_(denom_src) / c.bc2_sqrt + c.eps;
#ifdef __CUDA_ARCH__
    w = fma_(c.neg_step_size, m / denom, w);
#else
    w = w + (c.neg_step_size * m) / denom;
#endif
    // soft(w, 0) == w exactly (signed zeros and NaN included), so without l1 the prox is the
    // identity and needs no branch.
    v[W] = soft_threshold(w, c.threshold);
    v[M] = m;
    v[V] = sq;
  }
};

}  // namespace rules
}  // namespace sparseopt

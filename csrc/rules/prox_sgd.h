// Prox-SGD and sqrt(t)-Prox-SGD (docs/algorithms.md sections 1 and 2; iRDA paper eq. 17-18, 21-22).
//
//   g <- g + wd * w                      (weight_decay != 0)
//   m <- mu * m + g;  g <- m             (momentum != 0, heavy ball, m starts at 0)
//   w <- soft(w - lr * g, threshold)
//
// The two rules differ only in the threshold: lr * l1 for Prox-SGD, l1 * sqrt(t) / gamma for
// sqrt(t)-Prox-SGD (t = the step count, starting at 1). Both are one element-wise op.
//
// An Op is what the generic loops (csrc/cpu/elementwise_cpu.h, csrc/cuda/multi_tensor_apply.cuh)
// run: slots name the tensor lists (slot 0 is the parameter), kGrad is the slot that GradScaler's
// scale divides, kWrites the slots stored back, coeffs() the per-tensor scalars (computed in
// double, rounded once to the math type T) and operator() the per-element formula.
#pragma once

#include "common.h"

namespace sparseopt {
namespace rules {

template <bool kMomentum, bool kWeightDecay, bool kSqrtT>
struct ProxSgdOp {
  enum Slot { W = 0, G = 1, M = 2 };
  static constexpr int kDepth = kMomentum ? 3 : 2;
  static constexpr int kGrad = G;
  static constexpr unsigned kWrites = kMomentum ? ((1u << W) | (1u << M)) : (1u << W);
  static constexpr bool kUsesStep = kSqrtT;

  double lr;
  double l1;
  double momentum;
  double weight_decay;
  double gamma;  // sqrt(t) variant only

  template <typename T>
  struct Coeffs {
    T lr, threshold, mu, wd;
  };

  template <typename T>
  C10_HOST_DEVICE Coeffs<T> coeffs(double step) const {
    const double threshold = kSqrtT ? l1 * sqrt_(step) / gamma : lr * l1;
    return {T(lr), T(threshold), T(momentum), T(weight_decay)};
  }

  template <typename T>
  C10_HOST_DEVICE void operator()(T (&v)[kDepth], const Coeffs<T>& c) const {
    T g = v[G];
    if (kWeightDecay) g = g + c.wd * v[W];
    if (kMomentum) {
      v[kDepth - 1] = c.mu * v[kDepth - 1] + g;  // slot M (written this way so kDepth==2 compiles)
      g = v[kDepth - 1];
    }
    v[W] = soft_threshold(v[W] - c.lr * g, c.threshold);
  }
};

}  // namespace rules
}  // namespace sparseopt

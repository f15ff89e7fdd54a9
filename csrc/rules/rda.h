// RDA and iRDA (docs/algorithms.md sections 3 and 4; iRDA paper eq. 19-20, 27-31, Algorithm 1).
//
//   g    <- 0 where w == 0                      (iRDA Step 2, "retraining" only)
//   gbar <- gbar + (g - gbar) * (1/t)           (running mean of the gradients, eq. 27; 1/t is
//                                                a per-tensor coefficient: no division per element)
//   s     = lr * sqrt(t) / gamma                (t / beta_t with beta_t = gamma * sqrt(t))
//   w    <- soft(w0 - s * gbar, s * l1)         (eq. 20; iRDA and RDA(w0="zero") use w0 = 0)
//
// lr is a multiplier on the step size sqrt(t)/gamma (1 by default, which is the paper's rule);
// it exists so that LR schedulers work on RDA/iRDA as on any torch optimizer.
//
// In retraining a zero weight stays exactly zero: in exact arithmetic its masked gbar shrinks by
// (t-1)/t and so stays inside the threshold; the kernel states that outright instead of leaving
// it to rounding.
#pragma once

#include "common.h"

namespace sparseopt {
namespace rules {

template <bool kCenter>
struct RdaOp {
  enum Slot { W = 0, G = 1, GBAR = 2, W0 = 3 };
  static constexpr int kDepth = kCenter ? 4 : 3;
  static constexpr int kGrad = G;
  static constexpr unsigned kWrites = (1u << W) | (1u << GBAR);
  static constexpr bool kUsesStep = true;

  double lr;
  double l1;
  double gamma;
  bool retrain;           // Step 2 from the first step on (opt.start_retraining())
  long long retrain_after;  // Step 2 once t > retrain_after; < 0: never

  template <typename T>
  struct Coeffs {
    T inv_t, scale, threshold;
    bool masked;
  };

  template <typename T>
  C10_HOST_DEVICE Coeffs<T> coeffs(double step) const {
    const double scale = lr * sqrt_(step) / gamma;
    const bool masked = retrain || (retrain_after >= 0 && step > double(retrain_after));
    return {T(1.0 / step), T(scale), T(scale * l1), masked};
  }

  template <typename T>
  C10_HOST_DEVICE void operator()(T (&v)[kDepth], const Coeffs<T>& c) const {
    const bool frozen = c.masked && v[W] == T(0);
    const T g = frozen ? T(0) : v[G];
    v[GBAR] = v[GBAR] + (g - v[GBAR]) * c.inv_t;
    const T center = kCenter ? v[kDepth - 1] : T(0);  // slot W0 when kCenter
    const T w = soft_threshold(center - c.scale * v[GBAR], c.threshold);
    v[W] = frozen ? T(0) : w;
  }
};

}  // namespace rules
}  // namespace sparseopt

// OBProx-SG and OBProx-SG+ (docs/algorithms.md section 6; Chen et al. 2020, tianyic/obproxsg).
//
// Two phases, chosen per tensor from its step count t (t starts at 1; the step index is t - 1):
//
//   epoch   = (t - 1) / steps_per_epoch                      (integer division)
//   orthant = n_o <  0 : epoch >= n_p                        (OBProx-SG+: orthant for ever)
//             n_o == 0 : false                               (Prox-SG only)
//             n_o >  0 : epoch % (n_p + n_o) >= n_p
//
// Prox-SG phase:   w <- soft(w - lr * g, lr * l1)
// Orthant phase:   z  = sign(w)                               (0 for +-0 and for NaN)
//                  gz = z != 0 ? g + l1 * z : 0               (zero elements stay zero)
//                  wh = w - lr * gz
//                  w <- (wh * z <= eps) ? 0 : wh              (projection onto the face)
//
// The orthant step never turns a zero into a nonzero (z = 0 gives wh = w = +-0, and 0 <= eps)
// and never flips a sign (a kept wh has wh * z > eps >= 0). The projection is written as
// "zero if wh * z <= eps" rather than "keep if wh * z > eps" only so that a NaN (a diverged
// run) stays NaN instead of being hidden behind a zero, as soft_threshold does; for every
// non-NaN value the two read the same.
//
// The phase is decided on the device from the step counter, so step() needs no host sync and a
// step GradScaler skips (found_inf) does not advance the schedule. Both phases are the same
// kernel launch: the branch is uniform over a tensor.
#pragma once

#include "common.h"

namespace sparseopt {
namespace rules {

struct ObProxSgOp {
  enum Slot { W = 0, G = 1 };
  static constexpr int kDepth = 2;
  static constexpr int kGrad = G;
  static constexpr unsigned kWrites = 1u << W;
  static constexpr bool kUsesStep = true;

  double lr;
  double l1;
  double eps;
  long long steps_per_epoch;  // >= 1
  long long n_p;              // >= 1
  long long n_o;              // < 0: infinity (OBProx-SG+), 0: Prox-SG only

  // Whether step t (counted from 1) is an orthant step.
  C10_HOST_DEVICE bool is_orthant(double step) const {
    const long long epoch = (static_cast<long long>(step) - 1) / steps_per_epoch;
    if (n_o < 0) return epoch >= n_p;
    if (n_o == 0) return false;
    return epoch % (n_p + n_o) >= n_p;
  }

  template <typename T>
  struct Coeffs {
    T lr, l1, threshold, eps;
    bool orthant;
  };

  template <typename T>
  C10_HOST_DEVICE Coeffs<T> coeffs(double step) const {
    return {T(lr), T(l1), T(lr * l1), T(eps), is_orthant(step)};
  }

  template <typename T>
  C10_HOST_DEVICE void operator()(T (&v)[kDepth], const Coeffs<T>& c) const {
    const T w = v[W];
    if (c.orthant) {
      const T z = w > T(0) ? T(1) : (w < T(0) ? T(-1) : T(0));
      const T gz = z != T(0) ? v[G] + c.l1 * z : T(0);
      const T wh = w - c.lr * gz;
      v[W] = wh * z <= c.eps ? T(0) : wh;
    } else {
      v[W] = soft_threshold(w - c.lr * v[G], c.threshold);
    }
  }
};

}  // namespace rules
}  // namespace sparseopt

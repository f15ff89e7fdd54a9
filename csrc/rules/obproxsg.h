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
//                  wh = w - lr * (g + l1 * z)
//                  w <- (w == 0 or wh * z <= eps) ? 0 : wh    (projection onto the face)
//
// This is algorithms.md's "gz = g + l1*z where z != 0, else 0; wh = w - lr*gz; w <- wh if
// wh*z > eps else 0" rearranged: where w = 0 both give 0 (there the gradient cannot matter, so
// it is not masked, only the result), elsewhere z != 0 and the operations are the same. The
// orthant step never turns a zero into a nonzero and never flips a sign (a kept wh has
// wh * z > eps >= 0). Written as "zero if ..." rather than "keep if wh * z > eps" so that a NaN
// from a diverged run stays NaN instead of hiding behind a zero, as soft_threshold does; for
// every non-NaN value the two read the same. (Forms with a floating-point operation inside a
// select arm, like "z != 0 ? g + l1*z : 0", GCC does not vectorise under -ftrapping-math.)
//
// The phase is decided on the device from the step counter, so step() needs no host sync and a
// step GradScaler skips (found_inf) does not advance the schedule. Both phases are the same
// kernel launch: the branch is uniform over a tensor.
#pragma once

#include "bits.h"
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

  // Both phases are evaluated and one is selected: branch-free, so the CPU loop vectorises
  // (scalar code with branches on random signs is 10-30x slower).
  template <typename T>
  C10_HOST_DEVICE SPARSEOPT_ALWAYS_INLINE void operator()(T (&v)[kDepth],
                                                       const Coeffs<T>& c) const {
    const T w = v[W];
    const T g = v[G];
    const T prox = soft_threshold(w - c.lr * g, c.threshold);
    const T z = T(w > T(0)) - T(w < T(0));  // sign(w), 0 for +-0 and NaN (see bits.h on form)
    const T wh = w - c.lr * (g + c.l1 * z);
    const T orth = ((w == T(0)) | (wh * z <= c.eps)) ? T(0) : wh;
    using I = decltype(bits_(w));
    v[W] = select_bits_(c.orthant ? I(-1) : I(0), orth, prox);
  }
};

}  // namespace rules
}  // namespace sparseopt

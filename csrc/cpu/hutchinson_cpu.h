// The CPU loop of the Hutchinson pass (csrc/rules/adahessian.h, op hutchinson_diag_ in
// csrc/ops/adahessian.cpp): D[row] <- (accumulate ? D[row] : 0) + weight * mean_row |z * Hz|
// over the rows of one contiguous tensor, split between threads by at::parallel_for.
//
// Float-math storage (float, half, bfloat16) with rows of at most 64 elements runs on AVX2
// vectors where the CPU has them (csrc/cpu/vector_kernels.h: rows in the lanes, the very same
// operations in the same order); double, longer rows and other CPUs run the rule directly.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../rules/adahessian.h"
#include "elementwise_cpu.h"
#include "vector_kernels.h"

namespace sparseopt {
namespace cpu {

// Elements per task, as the element-wise loop's.
constexpr int64_t kHutchinsonGrain = kGrainSize;

template <typename S>
void hutchinson_rows(const S* zp, const S* hp, S* dp, int64_t rows, int64_t row_len,
                     double weight, bool accumulate) {
  using T = at::opmath_type<S>;
  const T w = static_cast<T>(weight);
  at::parallel_for(0, rows, std::max<int64_t>(1, kHutchinsonGrain / row_len),
                   [&](int64_t b, int64_t e) {
#ifdef SPARSEOPT_CPU_VECTOR_KERNELS
    if constexpr (!std::is_same_v<T, double>) {
      if (cpu_has_vector_kernels() &&
          hutchinson_rows_vectorised(storage_of<S>(), zp, hp, dp, b, e, row_len, w, accumulate))
        return;
    }
#endif
    if (row_len == 1) {
      // Element-wise tensors: the same formula with the row loops gone (row_len a constant
      // 1) and accumulate hoisted, so that the loop vectorises.
      if (accumulate) {
        for (int64_t r = b; r < e; ++r)
          dp[r] = static_cast<S>(static_cast<T>(dp[r]) +
                                 w * rules::hutchinson_row_mean<T>(zp + r, hp + r, 1));
      } else {
        for (int64_t r = b; r < e; ++r)
          dp[r] = static_cast<S>(T(0) + w * rules::hutchinson_row_mean<T>(zp + r, hp + r, 1));
      }
      return;
    }
    for (int64_t r = b; r < e; ++r) {
      const int64_t base = r * row_len;
      const T mean = rules::hutchinson_row_mean<T>(zp + base, hp + base, row_len);
      for (int64_t k = 0; k < row_len; ++k) {
        const T prev = accumulate ? static_cast<T>(dp[base + k]) : T(0);
        dp[base + k] = static_cast<S>(prev + w * mean);
      }
    }
  });
}

}  // namespace cpu
}  // namespace sparseopt

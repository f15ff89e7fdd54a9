// The CPU loop for element-wise rules: one parallel pass over all elements of all tensors.
//
// at::parallel_for (OpenMP) splits the concatenated element range of the whole tensor list
// evenly between threads, so a few huge tensors and many small ones balance alike and no chunk
// table is built. Each thread walks its range tensor by tensor; the inner loop calls the rule's
// inline formula and is vectorised by the compiler (`omp simd`: the slots never alias), or, for
// the rules listed in vector_kernels.h, runs the same formula on explicit AVX2 vectors.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "vector_kernels.h"

namespace sparseopt {
namespace cpu {

// Elements per task: large enough to amortise the scheduling, small enough to split a ResNet
// layer between cores.
constexpr int64_t kGrainSize = 32768;

// x86 builds target the SSE2 baseline; the loop is also compiled for AVX2+FMA and picked at
// run time (std::fma is a slow library call without hardware FMA, and AVX2 doubles the vector
// width). Per-element results are identical either way: no reductions, contraction stays off,
// and fma is correctly rounded in software and hardware alike.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__AVX2__)
#define SPARSEOPT_CPU_AVX2_DISPATCH 1
#endif

template <typename S, class Op, bool kScaled>
__attribute__((always_inline)) inline void elementwise_range_body(
    const std::array<void*, Op::kDepth>& base, int64_t begin, int64_t end, const Op& op,
    const typename Op::template Coeffs<at::opmath_type<S>>& c, at::opmath_type<S> inv_scale) {
  using T = at::opmath_type<S>;
  constexpr int D = Op::kDepth;
  S* p[D];
  for (int d = 0; d < D; ++d) p[d] = static_cast<S*>(base[d]);
#pragma omp simd
  for (int64_t j = begin; j < end; ++j) {
    T v[D];
    for (int d = 0; d < D; ++d) v[d] = static_cast<T>(p[d][j]);
    if (kScaled) {
      v[Op::kGrad] = v[Op::kGrad] * inv_scale;
      p[Op::kGrad][j] = static_cast<S>(v[Op::kGrad]);
    }
    op(v, c);
    for (int d = 0; d < D; ++d)
      if ((Op::kWrites >> d) & 1u) p[d][j] = static_cast<S>(v[d]);
  }
}

#ifdef SPARSEOPT_CPU_AVX2_DISPATCH
template <typename S, class Op, bool kScaled>
__attribute__((target("avx2,fma"))) void elementwise_range_avx2(
    const std::array<void*, Op::kDepth>& base, int64_t begin, int64_t end, const Op& op,
    const typename Op::template Coeffs<at::opmath_type<S>>& c, at::opmath_type<S> inv_scale) {
  elementwise_range_body<S, Op, kScaled>(base, begin, end, op, c, inv_scale);
}

inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename S>
constexpr Storage storage_of() {
  if constexpr (std::is_same_v<S, float>) return Storage::kFloat;
  if constexpr (std::is_same_v<S, double>) return Storage::kDouble;
  if constexpr (std::is_same_v<S, c10::Half>) return Storage::kHalf;
  static_assert(std::is_same_v<S, c10::BFloat16> || std::is_same_v<S, c10::Half> ||
                    std::is_same_v<S, float> || std::is_same_v<S, double>,
                "sparseopt: no storage kind for this scalar type");
  return Storage::kBFloat16;
}

template <typename S, class Op, bool kScaled>
void elementwise_range(const std::array<void*, Op::kDepth>& base, int64_t begin, int64_t end,
                       const Op& op, const typename Op::template Coeffs<at::opmath_type<S>>& c,
                       at::opmath_type<S> inv_scale) {
#ifdef SPARSEOPT_CPU_VECTOR_KERNELS
  if constexpr (HasVectorKernel<Op>::value) {
    if (cpu_has_vector_kernels()) {
      run_vectorised<Op>(storage_of<S>(), base.data(), begin, end, op, c,
                         kScaled ? &inv_scale : nullptr);
      return;
    }
  }
#endif
#ifdef SPARSEOPT_CPU_AVX2_DISPATCH
  if (cpu_has_avx2_fma()) {
    elementwise_range_avx2<S, Op, kScaled>(base, begin, end, op, c, inv_scale);
    return;
  }
#endif
  elementwise_range_body<S, Op, kScaled>(base, begin, end, op, c, inv_scale);
}

// Runs op over tensors described by raw pointers. steps[i] is tensor i's step count t (already
// incremented), inv_scale the reciprocal of GradScaler's scale (nullopt: not scaled).
template <class Op>
void elementwise_loop(const std::vector<std::array<void*, Op::kDepth>>& ptrs,
                     const std::vector<int64_t>& numels,
                     const std::vector<at::ScalarType>& dtypes, const std::vector<double>& steps,
                     std::optional<double> inv_scale, const Op& op) {
  const size_t n = numels.size();
  std::vector<int64_t> offsets(n + 1, 0);
  for (size_t i = 0; i < n; ++i) offsets[i + 1] = offsets[i] + numels[i];
  at::parallel_for(0, offsets[n], kGrainSize, [&](int64_t begin, int64_t end) {
    size_t i = std::upper_bound(offsets.begin(), offsets.end(), begin) - offsets.begin() - 1;
    while (begin < end) {
      while (offsets[i + 1] <= begin) ++i;  // skip empty tensors
      const int64_t stop = std::min(end, offsets[i + 1]);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtypes[i], "sparseopt_cpu", [&] {
        using T = at::opmath_type<scalar_t>;
        const auto c = op.template coeffs<T>(Op::kUsesStep ? steps[i] : 0.0);
        const int64_t b = begin - offsets[i], e = stop - offsets[i];
        if (inv_scale.has_value()) {
          // Rounded the way the reference rounds 1/scale: double reciprocal, then math type.
          elementwise_range<scalar_t, Op, true>(ptrs[i], b, e, op, c, static_cast<T>(*inv_scale));
        } else {
          elementwise_range<scalar_t, Op, false>(ptrs[i], b, e, op, c, T(1));
        }
      });
      begin = stop;
    }
  });
}

}  // namespace cpu
}  // namespace sparseopt

// The CPU loop's explicitly vectorised kernels (AVX2 + F16C, csrc/cpu/vector_kernels_avx2.cpp).
//
// For the rules whose formula is too long for the compiler's own vectorisation to keep up with
// memory (pDCA_e's exp: a long dependency chain; AdaHessian's sqrt and divisions; half and
// bfloat16 storage, whose conversions GCC leaves scalar), the CPU loop runs the very same rule
// (csrc/rules/*.h, operator() templated on the math type) on vector types instead of scalars.
// Every lane does the operations of the scalar formula in the same order, each correctly
// rounded (no FMA contraction; a fused multiply-add only where the rule calls mul_add_), so
// results equal the scalar loop's and the reference's bit for bit. No torch header here: the
// AVX2 translation unit includes only this and the rules.
#pragma once

#include <cstdint>
#include <type_traits>


#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define SPARSEOPT_CPU_VECTOR_KERNELS 1
#endif

namespace sparseopt {
namespace rules {
template <bool kWeightDecay>
struct PdcaOp;
enum class HessianPower;
template <HessianPower kPower>
struct AdaHessianOp;
}  // namespace rules

namespace cpu {

enum class Storage : int { kFloat, kDouble, kHalf, kBFloat16 };

// Rules with a vectorised kernel.
template <class Op>
struct HasVectorKernel : std::false_type {};
template <bool kWeightDecay>
struct HasVectorKernel<rules::PdcaOp<kWeightDecay>> : std::true_type {};
template <rules::HessianPower kPower>
struct HasVectorKernel<rules::AdaHessianOp<kPower>> : std::true_type {};

// op over elements [begin, end) of one tensor (base: Op::kDepth pointers to its slots, all of
// storage s; any alignment, any length). inv_scale: GradScaler's 1/scale in math type, or null.
// Call only when cpu_has_vector_kernels(): these functions are compiled for AVX2.
template <class Op>
void run_vectorised(Storage s, void* const* base, int64_t begin, int64_t end, const Op& op,
                    const typename Op::template Coeffs<float>& c, const float* inv_scale);
template <class Op>
void run_vectorised(Storage s, void* const* base, int64_t begin, int64_t end, const Op& op,
                    const typename Op::template Coeffs<double>& c, const double* inv_scale);

// The Hutchinson pass D <- (accumulate ? D : 0) + weight * mean_row |z * Hz| over rows
// [row_begin, row_end) of row_len elements (csrc/rules/adahessian.h) for float math (float, half,
// bfloat16 storage); false (nothing done) where it has no vector kernel: double, row_len > 64.
bool hutchinson_rows_vectorised(Storage s, const void* z, const void* hz, void* d,
                                int64_t row_begin, int64_t row_end, int64_t row_len, float weight,
                                bool accumulate);

#ifdef SPARSEOPT_CPU_VECTOR_KERNELS
// Checked once per process; the vector kernels must not run (not even their prologue) without.
bool cpu_has_vector_kernels();
#else
inline bool cpu_has_vector_kernels() { return false; }
#endif

}  // namespace cpu
}  // namespace sparseopt

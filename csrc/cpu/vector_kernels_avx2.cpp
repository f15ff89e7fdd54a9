// The AVX2 kernels of csrc/cpu/vector_kernels.h: the rules of csrc/rules/*.h run on the vector
// types of csrc/cpu/vec_avx2.h.
//
// The build targets the x86-64 baseline; this file switches the code generator to AVX2+F16C
// after the standard headers (which stay baseline) and before the rule headers, so the rules'
// templates instantiated here on vector types are compiled for AVX2. The caller checks
// cpu_has_vector_kernels() (compiled for the baseline, above the switch) first.
#include <cpuid.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)

namespace sparseopt {
namespace cpu {

bool cpu_has_vector_kernels() {
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
    return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

}  // namespace cpu
}  // namespace sparseopt

#pragma GCC push_options
#pragma GCC target("avx2,f16c,fma")

#include "../rules/adahessian.h"
#include "../rules/pdca.h"
#include "vec_avx2.h"
#include "vector_kernels.h"

namespace sparseopt {
namespace cpu {
namespace {

// Storage layouts (bit-compatible with c10::Half / c10::BFloat16, which need torch headers).
struct HalfBits {
  uint16_t x;
};
struct BFloat16Bits {
  uint16_t x;
};

using F32 = Vec<PsTraits, 2>;  // 16 floats: two independent registers per value
using F64 = Vec<PdTraits, 2>;  // 8 doubles

// The element-wise loops' vectors: 32 floats (four registers: four independent dependency
// chains per operation, measured 0.95 -> 0.75 ns/element for pDCA_e in fp32 and 1.45 -> 1.2 in
// bfloat16 with one core in L2, where two registers left the core waiting on latencies), or 8
// doubles (four registers measured slower there: 3.0-3.5 -> 3.6 ns/element).
template <typename S>
using VecFor = std::conditional_t<std::is_same_v<S, double>, F64, Vec<PsTraits, 4>>;

// 8 uint32 values < 2^16 -> 8 uint16 (in order).
__attribute__((always_inline)) inline __m128i narrow_u32_to_u16(__m256i v) {
  const __m256i packed = _mm256_packus_epi32(v, v);  // per 128-bit lane: a0..3 a0..3 | a4..7 a4..7
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));  // a0..3 a4..7
}

// float -> bfloat16 bits in the upper half of each 32-bit lane, as c10::BFloat16's
// round_to_nearest_even: u + 0x7FFF + ((u >> 16) & 1), a NaN 0x7FC0.
__attribute__((always_inline)) inline __m256i bf16_in_high_half(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC00000), nan);
}

// Loads and stores of V::kLanes elements. kAnyOrder: the elements may sit in the lanes in any
// order, as long as the store with kAnyOrder puts them back where the load took them (the
// element-wise rules, whose lanes never meet). bfloat16 uses it: 16 elements are one 256-bit load,
// a shift (the even elements, into the upper halves of the first register) and an and (the odd
// ones, which are there already), and their store one word blend, which restores the order,
// instead of a widening load per 8 and a lane-crossing permute per 8 (a shift and a blend cost
// 2-4% less time than two unpacks and a pack, measured).
template <typename S, class V, bool kAnyOrder = false>
__attribute__((always_inline)) inline V load(const S* p) {
  constexpr int L = V::kLanes / V::kRegs;
  V v;
  if constexpr (kAnyOrder && std::is_same_v<S, BFloat16Bits> && V::kRegs % 2 == 0) {
    for (int i = 0; i < V::kRegs; i += 2) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i * L));
      v.r[i] = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));  // the even elements
      v.r[i + 1] = _mm256_castsi256_ps(  // the odd elements, already in the upper halves
          _mm256_and_si256(w, _mm256_set1_epi32(static_cast<int32_t>(0xFFFF0000u))));
    }
    return v;
  }
  for (int i = 0; i < V::kRegs; ++i) {
    if constexpr (std::is_same_v<S, float>) {
      v.r[i] = _mm256_loadu_ps(p + i * L);
    } else if constexpr (std::is_same_v<S, double>) {
      v.r[i] = _mm256_loadu_pd(p + i * L);
    } else {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i * L));
      if constexpr (std::is_same_v<S, HalfBits>) {
        v.r[i] = _mm256_cvtph_ps(h);  // exact, as c10::Half -> float
      } else {  // bfloat16: the upper half of a float, as c10::BFloat16 -> float
        v.r[i] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      }
    }
  }
  return v;
}

template <typename S, bool kAnyOrder = false, class V>
__attribute__((always_inline)) inline void store(S* p, const V& v) {
  constexpr int L = V::kLanes / V::kRegs;
  if constexpr (kAnyOrder && std::is_same_v<S, BFloat16Bits> && V::kRegs % 2 == 0) {
    for (int i = 0; i < V::kRegs; i += 2) {
      const __m256i even = _mm256_srli_epi32(bf16_in_high_half(v.r[i]), 16);
      const __m256i odd = bf16_in_high_half(v.r[i + 1]);  // its lower halves are dropped
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + i * L),
                          _mm256_blend_epi16(even, odd, 0xAA));
    }
    return;
  }
  for (int i = 0; i < V::kRegs; ++i) {
    if constexpr (std::is_same_v<S, float>) {
      _mm256_storeu_ps(p + i * L, v.r[i]);
    } else if constexpr (std::is_same_v<S, double>) {
      _mm256_storeu_pd(p + i * L, v.r[i]);
    } else {
      const __m256 x = v.r[i];
      __m256i out;
      if constexpr (std::is_same_v<S, HalfBits>) {
        // Round to nearest even (c10::Half's conversion); a NaN becomes sign | 0x7E00 as there.
        const __m256i u = _mm256_castps_si256(x);
        const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        const __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
        const __m256i nan_h = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000)),
            _mm256_set1_epi32(0x7E00));
        out = _mm256_blendv_epi8(h, nan_h, nan);
      } else {
        out = _mm256_srli_epi32(bf16_in_high_half(x), 16);
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i * L), narrow_u32_to_u16(out));
    }
  }
}

// Rules split in stages (PdcaOp: pre1, pre2 from x, then apply).
template <class Op, class = void>
struct HasPreStage : std::false_type {};
template <class Op>
struct HasPreStage<Op, std::void_t<decltype(Op::kPreSlot)>> : std::true_type {};

// One vector's worth of elements at q[0..kDepth): the scalar loop's body (csrc/cpu/
// elementwise_cpu.h) on V. With kPre, the first stage's result for these elements is given.
template <class Op, typename S, class V, bool kScaled, bool kPre, typename T>
__attribute__((always_inline)) inline void block(S* const* q, const Op& op,
                                                 const typename Op::template Coeffs<T>& c,
                                                 T inv_scale, const V* pre) {
  constexpr int D = Op::kDepth;
  V v[D];
  for (int d = 0; d < D; ++d) v[d] = load<S, V, true>(q[d]);
  if constexpr (kScaled) {
    v[Op::kGrad] = v[Op::kGrad] * V(inv_scale);
    store<S, true>(q[Op::kGrad], v[Op::kGrad]);
  }
  if constexpr (kPre) {
    op.apply(v, c, *pre);
  } else {
    op(v, c);
  }
  for (int d = 0; d < D; ++d)
    if ((Op::kWrites >> d) & 1u) store<S, true>(q[d], v[d]);
}

// Vectors per block of the staged loop: 256 bytes of each array's storage (64 floats, 128
// bfloat16 or half, 32 doubles). The stages' results stay in L1 either way; the block's size
// sets how the loop meets memory. With 11M parameters on 2 threads (the data in DRAM), 1 KB
// blocks ran pDCA_e at 0.72-0.98 of a stream-add and 256 B at 0.83-1.03 in fp32 (2-4 KB were
// worse still: 0.61-0.73); bf16 and fp64 gained 3-10%. With the data in L2 the two run alike.
template <class V, typename S>
constexpr int kStageBlock = 256 / (V::kLanes * static_cast<int>(sizeof(S)));

// flatten: every call below is inlined (the rule's operator() included), so the vector values
// stay in registers.
template <class Op, typename S, bool kScaled, typename T>
__attribute__((flatten)) void range(void* const* base, int64_t begin, int64_t end, const Op& op,
                                    const typename Op::template Coeffs<T>& coeffs, T inv_scale) {
  using V = VecFor<S>;
  constexpr int D = Op::kDepth;
  constexpr int W = V::kLanes;
  const auto c = coeffs;  // a local copy: no store can alias it, so it stays in registers
  S* q[D];
  int64_t j = begin;
  if constexpr (HasPreStage<Op>::value) {
    // Loop fission by blocks: pDCA_e's formula is one long dependency chain per element (exp's
    // range reduction, its polynomial, then the step): the out-of-order window (about 30
    // elements' worth of instructions) cannot cover its latency, so the core idles. Each
    // stage run over a whole block is a chain about a third as long (the product of latency
    // and instructions per element, which bounds the time here, shrinks accordingly). Every
    // element still gets exactly the operations of operator().
    static_assert(kStageBlock<V, S> >= 1, "a vector larger than the 256-byte block");
    rules::ExpReduced<V> reduced[kStageBlock<V, S>];
    V pre[kStageBlock<V, S>];
    for (; j + kStageBlock<V, S> * W <= end; j += kStageBlock<V, S> * W) {
      const S* x = static_cast<const S*>(base[Op::kPreSlot]) + j;
      for (int b = 0; b < kStageBlock<V, S>; ++b)
        reduced[b] = Op::pre1(load<S, V, true>(x + b * W), c);
      for (int b = 0; b < kStageBlock<V, S>; ++b)
        pre[b] = Op::pre2(reduced[b], load<S, V, true>(x + b * W), c);
      for (int b = 0; b < kStageBlock<V, S>; ++b) {
        for (int d = 0; d < D; ++d) q[d] = static_cast<S*>(base[d]) + j + b * W;
        block<Op, S, V, kScaled, true>(q, op, c, inv_scale, &pre[b]);
      }
    }
  }
  for (; j + W <= end; j += W) {
    for (int d = 0; d < D; ++d) q[d] = static_cast<S*>(base[d]) + j;
    block<Op, S, V, kScaled, false>(q, op, c, inv_scale, static_cast<const V*>(nullptr));
  }
  if (j < end) {
    // The last < W elements go through a zero-padded copy, so that they take the very same
    // vector code (the padding lanes compute on zeros and are dropped).
    const int64_t n = end - j;
    S buf[D][W] = {};
    for (int d = 0; d < D; ++d) {
      std::memcpy(buf[d], static_cast<S*>(base[d]) + j, n * sizeof(S));
      q[d] = buf[d];
    }
    block<Op, S, V, kScaled, false>(q, op, c, inv_scale, static_cast<const V*>(nullptr));
    for (int d = 0; d < D; ++d)
      if (((Op::kWrites >> d) & 1u) || (kScaled && d == Op::kGrad))
        std::memcpy(static_cast<S*>(base[d]) + j, buf[d], n * sizeof(S));
  }
}

template <class Op, typename S, typename T>
void range_scaled_or_not(void* const* base, int64_t begin, int64_t end, const Op& op,
                         const typename Op::template Coeffs<T>& c, const T* inv_scale) {
  if (inv_scale != nullptr) {
    range<Op, S, true>(base, begin, end, op, c, *inv_scale);
  } else {
    range<Op, S, false>(base, begin, end, op, c, T(1));
  }
}

// -- the Hutchinson pass ---------------------------------------------------------------------
// The formula of rules::hutchinson_row_mean as the CPU loop applies it (csrc/cpu/hutchinson_cpu.h),
// rows in the lanes:
//   sum = ((0 + |z_0*hz_0|) + |z_1*hz_1|) + ...;  D_k <- (accumulate ? D_k : 0) + w * (sum / L)

constexpr int64_t kMaxVectorRowLen = 64;

// Rows of one element: the formula above with L = 1, straight along memory.
template <typename S>
__attribute__((flatten)) void hutchinson_elements(const S* z, const S* hz, S* d, int64_t begin, int64_t end, float w,
                         bool accumulate) {
  using V = F32;
  constexpr int W = V::kLanes;
  const V zero(0.f), one(1.f), weight(w);
  auto body = [&](const S* zb, const S* hb, S* db) {
    const V mean = (zero + abs_(load<S, V, true>(zb) * load<S, V, true>(hb))) / one;
    const V prev = accumulate ? load<S, V, true>(db) : zero;
    store<S, true>(db, prev + weight * mean);
  };
  int64_t j = begin;
  for (; j + W <= end; j += W) body(z + j, hz + j, d + j);
  if (j < end) {  // the last < W elements through zero-padded copies
    const int64_t n = end - j;
    S zb[W] = {}, hb[W] = {}, db[W] = {};
    std::memcpy(zb, z + j, n * sizeof(S));
    std::memcpy(hb, hz + j, n * sizeof(S));
    if (accumulate) std::memcpy(db, d + j, n * sizeof(S));
    body(zb, hb, db);
    std::memcpy(d + j, db, n * sizeof(S));
  }
}

// Rows of 2 .. kMaxVectorRowLen elements (conv weights' spatial taps): W rows at a time; their
// products go to an L1-resident block, each row is summed in the kernel's order, and the row
// values are spread back over the elements in registers.
template <typename S>
__attribute__((flatten)) void hutchinson_rows(const S* z, const S* hz, S* d, int64_t row_begin, int64_t row_end,
                     int64_t row_len, float w, bool accumulate) {
  using V = F32;
  constexpr int W = V::kLanes;
  static_assert(W == 16 && V::kRegs == 2, "rows 0-7 in register 0, rows 8-15 in register 1");
  const V zero(0.f), len(static_cast<float>(row_len)), weight(w);
  alignas(32) float prod[W * kMaxVectorRowLen];
  const int64_t total = W * row_len;  // elements of W rows: a multiple of W
  // The row of each of the block's elements, per 8-lane group: its lane in a register
  // (row & 7) and which register (row >= 8, as a blend mask). Each row's value is then spread
  // over its elements by two lane permutes and a blend per 8 elements, all in registers.
  alignas(32) int32_t lane_of[W * kMaxVectorRowLen];
  alignas(32) int32_t high_of[W * kMaxVectorRowLen];
  for (int64_t e = 0; e < total; ++e) {
    const int32_t row = static_cast<int32_t>(e / row_len);
    lane_of[e] = row & 7;
    high_of[e] = row >= 8 ? -1 : 0;
  }
  for (int64_t r = row_begin; r < row_end; r += W) {
    const int64_t rows = std::min<int64_t>(W, row_end - r);
    const int64_t off = r * row_len, n = rows * row_len;
    const S* zb = z + off;
    const S* hb = hz + off;
    S* db = d + off;
    S zbuf[W * kMaxVectorRowLen], hbuf[W * kMaxVectorRowLen], dbuf[W * kMaxVectorRowLen];
    if (rows < W) {  // the last rows: through zero-padded copies (the padding rows are dropped)
      std::memset(zbuf, 0, sizeof(zbuf));
      std::memset(hbuf, 0, sizeof(hbuf));
      std::memset(dbuf, 0, sizeof(dbuf));
      std::memcpy(zbuf, zb, n * sizeof(S));
      std::memcpy(hbuf, hb, n * sizeof(S));
      if (accumulate) std::memcpy(dbuf, db, n * sizeof(S));
      zb = zbuf, hb = hbuf, db = dbuf;
    }
    for (int64_t i = 0; i < total; i += W) {
      const V p = abs_(load<S, V>(zb + i) * load<S, V>(hb + i));
      for (int k = 0; k < V::kRegs; ++k) _mm256_store_ps(prod + i + 8 * k, p.r[k]);
    }
    // Each row's sum in the kernel's order, a scalar chain per row, the W chains interleaved
    // (independent, so they overlap); scalar loads from L1 are cheaper here than gathers
    // (measured: the gathers took about 70% of the pass).
    alignas(32) float row_sums[W] = {};
    for (int64_t t = 0; t < row_len; ++t)
      for (int rr = 0; rr < W; ++rr) row_sums[rr] += prod[rr * row_len + t];
    V sum;
    for (int k = 0; k < V::kRegs; ++k) sum.r[k] = _mm256_load_ps(row_sums + 8 * k);
    const V wm = weight * (sum / len);
    for (int64_t i = 0; i < total; i += W) {
      V v;
      for (int k = 0; k < V::kRegs; ++k) {
        const int64_t e = i + 8 * k;
        const __m256i lane = _mm256_load_si256(reinterpret_cast<const __m256i*>(lane_of + e));
        const __m256i high = _mm256_load_si256(reinterpret_cast<const __m256i*>(high_of + e));
        v.r[k] = _mm256_blendv_ps(_mm256_permutevar8x32_ps(wm.r[0], lane),
                                  _mm256_permutevar8x32_ps(wm.r[1], lane),
                                  _mm256_castsi256_ps(high));
      }
      const V prev = accumulate ? load<S, V>(db + i) : zero;
      store<S>(db + i, prev + v);
    }
    if (rows < W) std::memcpy(d + off, dbuf, n * sizeof(S));
  }
}

// 8 x 8 floats transposed in registers: afterwards r[j] lane i is what r[i] lane j was.
__attribute__((always_inline)) inline void transpose8(__m256 (&r)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Rows of 2 .. kMaxVectorRowLen elements in blocks of 64 rows, without gathers: the block is 8
// streams of 8 consecutive rows (8 * row_len contiguous elements each), and the products of 8
// consecutive elements of every stream, transposed, put element e of all 8 streams in one
// register, so each lane sums its stream's rows in the kernel's order with vector adds. A row's
// value then reaches its elements by one lane permute per 8 elements (all streams share the
// element -> row map). Returns the first row not done (the remaining < 64 rows).
template <typename S>
__attribute__((flatten)) int64_t hutchinson_row_blocks(const S* z, const S* hz, S* d,
                                                       int64_t row_begin, int64_t row_end,
                                                       int64_t row_len, float w, bool accumulate) {
  using V = Vec<PsTraits, 1>;
  const int64_t span = 8 * row_len;  // one stream: 8 rows, a multiple of 8 elements
  alignas(32) int32_t row_of[8 * kMaxVectorRowLen];
  for (int64_t e = 0; e < span; ++e) row_of[e] = static_cast<int32_t>(e / row_len);
  const V zero(0.f), len(static_cast<float>(row_len)), weight(w);
  int64_t r = row_begin;
  for (; r + 64 <= row_end; r += 64) {
    const int64_t off = r * row_len;
    __m256 wm[8];  // wm[row] lane i: the value of row `row` of stream i
    V acc = zero;
    int64_t t = 0, row = 0;  // element e's position in its row, and the row
    for (int64_t k = 0; k < span; k += 8) {
      __m256 p[8];
      for (int i = 0; i < 8; ++i) {
        const int64_t at = off + i * span + k;
        p[i] = abs_(load<S, V>(z + at) * load<S, V>(hz + at)).r[0];
      }
      transpose8(p);
      for (int j = 0; j < 8; ++j) {
        V x;
        x.r[0] = p[j];
        acc = (t == 0 ? zero : acc) + x;  // sum = ((0 + a_0) + a_1) + ...
        if (++t == row_len) {
          wm[row++] = (weight * (acc / len)).r[0];
          t = 0;
        }
      }
    }
    transpose8(wm);  // wm[i] lane row: stream i's row values
    for (int i = 0; i < 8; ++i) {
      S* db = d + off + i * span;
      for (int64_t k = 0; k < span; k += 8) {
        V v;
        v.r[0] = _mm256_permutevar8x32_ps(
            wm[i], _mm256_load_si256(reinterpret_cast<const __m256i*>(row_of + k)));
        const V prev = accumulate ? load<S, V>(db + k) : zero;
        store<S>(db + k, prev + v);
      }
    }
  }
  return r;
}

template <typename S>
bool hutchinson_any(const void* z, const void* hz, void* d, int64_t row_begin, int64_t row_end,
                    int64_t row_len, float w, bool accumulate) {
  const S* zp = static_cast<const S*>(z);
  const S* hp = static_cast<const S*>(hz);
  S* dp = static_cast<S*>(d);
  if (row_len == 1) {
    hutchinson_elements(zp, hp, dp, row_begin, row_end, w, accumulate);
    return true;
  }
  if (row_len > kMaxVectorRowLen) return false;
  // The gather-free blocks for 16-bit storage only: measured on the ResNet18-CIFAR set with 2
  // threads (benchmarks/RESULTS.md), bf16 6.2 ms vs 7.2 ms, but fp32 11.0 ms vs 9.6 ms.
  const int64_t done = std::is_same_v<S, float>
                           ? row_begin
                           : hutchinson_row_blocks(zp, hp, dp, row_begin, row_end, row_len, w,
                                                   accumulate);
  if (done < row_end) hutchinson_rows(zp, hp, dp, done, row_end, row_len, w, accumulate);
  return true;
}

}  // namespace

template <class Op>
void run_vectorised(Storage s, void* const* base, int64_t begin, int64_t end, const Op& op,
                    const typename Op::template Coeffs<float>& c, const float* inv_scale) {
  switch (s) {
    case Storage::kFloat:
      return range_scaled_or_not<Op, float>(base, begin, end, op, c, inv_scale);
    case Storage::kHalf:
      return range_scaled_or_not<Op, HalfBits>(base, begin, end, op, c, inv_scale);
    case Storage::kBFloat16:
      return range_scaled_or_not<Op, BFloat16Bits>(base, begin, end, op, c, inv_scale);
    case Storage::kDouble:
      break;  // double storage has double math: the other overload
  }
  __builtin_trap();
}

template <class Op>
void run_vectorised(Storage s, void* const* base, int64_t begin, int64_t end, const Op& op,
                    const typename Op::template Coeffs<double>& c, const double* inv_scale) {
  if (s != Storage::kDouble) __builtin_trap();
  range_scaled_or_not<Op, double>(base, begin, end, op, c, inv_scale);
}

bool hutchinson_rows_vectorised(Storage s, const void* z, const void* hz, void* d,
                                int64_t row_begin, int64_t row_end, int64_t row_len, float weight,
                                bool accumulate) {
  switch (s) {
    case Storage::kFloat:
      return hutchinson_any<float>(z, hz, d, row_begin, row_end, row_len, weight, accumulate);
    case Storage::kHalf:
      return hutchinson_any<HalfBits>(z, hz, d, row_begin, row_end, row_len, weight, accumulate);
    case Storage::kBFloat16:
      return hutchinson_any<BFloat16Bits>(z, hz, d, row_begin, row_end, row_len, weight,
                                          accumulate);
    case Storage::kDouble:
      break;
  }
  return false;  // double: the scalar loop
}

#define SPARSEOPT_INSTANTIATE(...)                                                        \
  template void run_vectorised<__VA_ARGS__>(Storage, void* const*, int64_t, int64_t,      \
                                            const __VA_ARGS__&,                           \
                                            const __VA_ARGS__::Coeffs<float>&, const float*); \
  template void run_vectorised<__VA_ARGS__>(Storage, void* const*, int64_t, int64_t,      \
                                            const __VA_ARGS__&,                           \
                                            const __VA_ARGS__::Coeffs<double>&, const double*);
SPARSEOPT_INSTANTIATE(rules::PdcaOp<false>)
SPARSEOPT_INSTANTIATE(rules::PdcaOp<true>)
SPARSEOPT_INSTANTIATE(rules::AdaHessianOp<rules::HessianPower::kOne>)
SPARSEOPT_INSTANTIATE(rules::AdaHessianOp<rules::HessianPower::kHalf>)
SPARSEOPT_INSTANTIATE(rules::AdaHessianOp<rules::HessianPower::kOther>)
#undef SPARSEOPT_INSTANTIATE

}  // namespace cpu
}  // namespace sparseopt

#pragma GCC pop_options

#endif

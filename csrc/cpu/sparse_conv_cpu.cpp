// CPU kernels of the compressed sparse convolutions; see sparse_conv_cpu.h for the formats.
#include "sparse_conv_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SPARSEOPT_X86_SIMD 1
#else
#define SPARSEOPT_X86_SIMD 0
#endif

namespace sparseopt {
namespace cpu {
namespace {

// Spatial elements per work item: 4 AVX-512 float vectors, 256 bytes of each input row.
constexpr int64_t kTile = 64;

// How the pointwise work is cut: (image, spatial tile, block of output channels) items, the
// block shrunk until there are enough items to keep every thread busy (batch 1 at 7x7 has a
// single spatial tile, so the output channels must be split).
struct PointwisePlan {
  int64_t tiles, block, blocks, items;
};

PointwisePlan plan_pointwise(int64_t N, int64_t O, int64_t HW) {
  PointwisePlan p{};
  p.tiles = (HW + kTile - 1) / kTile;
  const int64_t want = 8 * static_cast<int64_t>(at::get_num_threads());
  p.block = std::max<int64_t>(O, 1);
  while (p.block > 16 && N * p.tiles * ((O + p.block - 1) / p.block) < want) {
    p.block = (p.block + 1) / 2;
  }
  p.block += p.block & 1;  // even: output channels are processed in pairs
  p.blocks = (O + p.block - 1) / p.block;
  p.items = N * p.tiles * p.blocks;
  return p;
}

template <typename T>
inline T clamp_scalar(T v, T lo, T hi) {
  // NaN compares false both ways and stays NaN, as torch.clamp keeps it.
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// Portable item: accumulators in an L1 array, the inner loop over the tile is contiguous.
// xn: image n's planes (channel c at xn + c * sc); on: the output's (channel o at on + o * oc).
template <typename T>
void pointwise_item_portable(const T* xn, int64_t sc, const int32_t* row_ptr,
                             const int32_t* col_idx, const T* values, const T* bias, T* on,
                             int64_t oc, int64_t t0, int64_t len, int64_t o0, int64_t o1,
                             const Activation& act) {
  T acc[kTile];
  const T lo = static_cast<T>(act.lo), hi = static_cast<T>(act.hi);
  for (int64_t o = o0; o < o1; ++o) {
    const T b = bias != nullptr ? bias[o] : T(0);
    for (int64_t j = 0; j < len; ++j) acc[j] = b;
    for (int32_t k = row_ptr[o]; k < row_ptr[o + 1]; ++k) {
      const T* xr = xn + static_cast<int64_t>(col_idx[k]) * sc + t0;
      const T w = values[k];
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) acc[j] += w * xr[j];
    }
    if (act.on) {
      for (int64_t j = 0; j < len; ++j) acc[j] = clamp_scalar(acc[j], lo, hi);
    }
    std::memcpy(on + o * oc + t0, acc, static_cast<size_t>(len) * sizeof(T));
  }
}

#if SPARSEOPT_X86_SIMD
// acc[j] += w * x[16 j .. 16 j + 15] for the NV vectors of a tile; the last one is masked (the
// tile's tail), so no load reads past the end of a row.
template <int NV>
__attribute__((target("avx512f"))) inline void axpy_tile(__m512* acc, __m512 w, const float* x,
                                                         __mmask16 last) {
  for (int j = 0; j < NV - 1; ++j) acc[j] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 16 * j), acc[j]);
  acc[NV - 1] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(last, x + 16 * (NV - 1)), acc[NV - 1]);
}

// The epilogue: clamp to [lo, hi] when the activation is on (max(lo, v) returns v when v is
// NaN: the second operand wins), then store; the last vector is masked (the tile's tail).
template <int NV>
__attribute__((target("avx512f"))) inline void store_tile(float* out, __m512* acc,
                                                          __mmask16 last, const Activation& act) {
  if (act.on) {
    const __m512 lo = _mm512_set1_ps(static_cast<float>(act.lo));
    const __m512 hi = _mm512_set1_ps(static_cast<float>(act.hi));
    for (int j = 0; j < NV; ++j) acc[j] = _mm512_min_ps(hi, _mm512_max_ps(lo, acc[j]));
  }
  for (int j = 0; j < NV - 1; ++j) _mm512_storeu_ps(out + 16 * j, acc[j]);
  _mm512_mask_storeu_ps(out + 16 * (NV - 1), last, acc[NV - 1]);
}

// AVX-512 item: the tile's accumulators stay in registers; two output channels are walked at
// once (2 x NV independent FMA chains) to hide the FMA latency.
template <int NV>
__attribute__((target("avx512f"))) void pointwise_item_avx512(
    const float* xn, int64_t sc, const int32_t* row_ptr, const int32_t* col_idx,
    const float* values, const float* bias, float* on, int64_t oc, int64_t t0, __mmask16 last,
    int64_t o0, int64_t o1, const Activation& act) {
  const float* xt = xn + t0;
  float* ot = on + t0;
  int64_t o = o0;
  for (; o + 1 < o1; o += 2) {
    __m512 a[NV], b[NV];
    const __m512 ba = _mm512_set1_ps(bias != nullptr ? bias[o] : 0.f);
    const __m512 bb = _mm512_set1_ps(bias != nullptr ? bias[o + 1] : 0.f);
    for (int j = 0; j < NV; ++j) {
      a[j] = ba;
      b[j] = bb;
    }
    int32_t ka = row_ptr[o], kb = row_ptr[o + 1];
    const int32_t ea = kb, eb = row_ptr[o + 2];
    const int32_t both = std::min(ea - ka, eb - kb);
    for (int32_t i = 0; i < both; ++i, ++ka, ++kb) {
      axpy_tile<NV>(a, _mm512_set1_ps(values[ka]), xt + static_cast<int64_t>(col_idx[ka]) * sc,
                    last);
      axpy_tile<NV>(b, _mm512_set1_ps(values[kb]), xt + static_cast<int64_t>(col_idx[kb]) * sc,
                    last);
    }
    for (; ka < ea; ++ka)
      axpy_tile<NV>(a, _mm512_set1_ps(values[ka]), xt + static_cast<int64_t>(col_idx[ka]) * sc,
                    last);
    for (; kb < eb; ++kb)
      axpy_tile<NV>(b, _mm512_set1_ps(values[kb]), xt + static_cast<int64_t>(col_idx[kb]) * sc,
                    last);
    store_tile<NV>(ot + o * oc, a, last, act);
    store_tile<NV>(ot + (o + 1) * oc, b, last, act);
  }
  if (o < o1) {
    __m512 a[NV];
    const __m512 ba = _mm512_set1_ps(bias != nullptr ? bias[o] : 0.f);
    for (int j = 0; j < NV; ++j) a[j] = ba;
    for (int32_t k = row_ptr[o]; k < row_ptr[o + 1]; ++k)
      axpy_tile<NV>(a, _mm512_set1_ps(values[k]), xt + static_cast<int64_t>(col_idx[k]) * sc,
                    last);
    store_tile<NV>(ot + o * oc, a, last, act);
  }
}
#endif

#if SPARSEOPT_X86_SIMD
// The AVX2 + FMA path (CPUs without AVX-512, e.g. AMD Zen 2/3): 16 ymm registers, so one output
// channel at a time with NV <= 8 vectors of 8 floats (a 64-wide tile) as its accumulators, NV
// independent FMA chains per nonzero. Lanes past the tile's end are masked on load and store.
inline __attribute__((target("avx2"))) __m256i avx2_lanes(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

// Store the first n (1..8) lanes of v. A full vector is a plain store; a partial one is at most
// three narrower stores (4, 2, 1 lanes by the bits of n), because AMD CPUs run the masked store
// (vmaskmovps) microcoded, many times slower than a store (masked loads are fast, and used for
// the tails), and a copy through a stack buffer costs a memcpy call per row.
inline __attribute__((target("avx2"))) void store_lanes(float* dst, __m256 v, int n) {
  if (n == 8) {
    _mm256_storeu_ps(dst, v);
    return;
  }
  __m128 part = _mm256_castps256_ps128(v);
  if (n & 4) {
    _mm_storeu_ps(dst, part);
    part = _mm256_extractf128_ps(v, 1);
    dst += 4;
  }
  if (n & 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst), part);
    part = _mm_movehl_ps(part, part);
    dst += 2;
  }
  if (n & 1) _mm_store_ss(dst, part);
}

template <int NV>
__attribute__((target("avx2,fma"))) void pointwise_item_avx2(
    const float* xn, int64_t sc, const int32_t* row_ptr, const int32_t* col_idx,
    const float* values, const float* bias, float* on, int64_t oc, int64_t t0, int64_t len,
    int64_t o0, int64_t o1, const Activation& act) {
  const float* xt = xn + t0;
  float* ot = on + t0;
  const int tail = static_cast<int>(len - 8 * (NV - 1));
  const __m256i last = avx2_lanes(tail);
  const __m256 lo = _mm256_set1_ps(static_cast<float>(act.lo));
  const __m256 hi = _mm256_set1_ps(static_cast<float>(act.hi));
  for (int64_t o = o0; o < o1; ++o) {
    __m256 a[NV];
    const __m256 b = _mm256_set1_ps(bias != nullptr ? bias[o] : 0.f);
    for (int j = 0; j < NV; ++j) a[j] = b;
    for (int32_t k = row_ptr[o]; k < row_ptr[o + 1]; ++k) {
      const float* xr = xt + static_cast<int64_t>(col_idx[k]) * sc;
      const __m256 w = _mm256_broadcast_ss(values + k);
      for (int j = 0; j < NV - 1; ++j) a[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * j), a[j]);
      a[NV - 1] = _mm256_fmadd_ps(w, _mm256_maskload_ps(xr + 8 * (NV - 1), last), a[NV - 1]);
    }
    // max(lo, v) returns v when v is NaN (the second operand wins), as torch.clamp keeps NaN.
    if (act.on) {
      for (int j = 0; j < NV; ++j) a[j] = _mm256_min_ps(hi, _mm256_max_ps(lo, a[j]));
    }
    float* orow = ot + o * oc;
    for (int j = 0; j < NV - 1; ++j) _mm256_storeu_ps(orow + 8 * j, a[j]);
    store_lanes(orow + 8 * (NV - 1), a[NV - 1], tail);
  }
}

// One nonzero tap of a depthwise filter for the AVX-512 row kernel, for one segment of at most
// 64 output columns: its row, its input column offset, its weight, and per output vector j the
// valid input lanes of the (one or two) 16-float loads it makes. Lanes outside the input row are
// masked out (never read; they count as the zero padding), so the shifted pointer may start
// before the row.
struct VecTap {
  int64_t ky, off;  // input column of output column ox: ox * sw + off
  float w;
  __mmask16 first[4], second[4];
};

inline __mmask16 in_row_lanes(int64_t start, int64_t W) {
  uint32_t bits = 0;
  for (int i = 0; i < 16; ++i) bits |= (start + i >= 0 && start + i < W ? 1u : 0u) << i;
  return static_cast<__mmask16>(bits);
}

// Depthwise plane segment: output columns [ox0, ox0 + 16 NV) of every output row, stride SW
// (1 or 2) along the width. Each output row segment is NV registers; each tap adds one masked
// load (stride 1) or two masked loads and an even-lane permute (stride 2) plus an FMA per
// register.
template <int NV, int SW>
__attribute__((target("avx512f"))) void depthwise_segment_avx512(
    const float* xp, float* op, const VecTap* taps, int64_t ntaps, float bias, int64_t H,
    int64_t W, int64_t OH, int64_t OW, int64_t sh, int64_t ph, int64_t ox0,
    const Activation& act) {
  __mmask16 out_mask[NV];
  for (int j = 0; j < NV; ++j) {
    const int64_t n = std::min<int64_t>(16, std::max<int64_t>(0, OW - ox0 - 16 * j));
    out_mask[j] = static_cast<__mmask16>((1u << n) - 1u);
  }
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512 b = _mm512_set1_ps(bias);
  const __m512 lo = _mm512_set1_ps(static_cast<float>(act.lo));
  const __m512 hi = _mm512_set1_ps(static_cast<float>(act.hi));
  for (int64_t oy = 0; oy < OH; ++oy) {
    __m512 acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = b;
    for (int64_t t = 0; t < ntaps; ++t) {
      const VecTap& tp = taps[t];
      const int64_t iy = oy * sh - ph + tp.ky;
      if (iy < 0 || iy >= H) continue;
      const float* xr = xp + iy * W + ox0 * SW + tp.off;
      const __m512 w = _mm512_set1_ps(tp.w);
      for (int j = 0; j < NV; ++j) {
        __m512 v;
        if constexpr (SW == 1) {
          v = _mm512_maskz_loadu_ps(tp.first[j], xr + 16 * j);
        } else {
          const __m512 a = _mm512_maskz_loadu_ps(tp.first[j], xr + 32 * j);
          const __m512 c = _mm512_maskz_loadu_ps(tp.second[j], xr + 32 * j + 16);
          v = _mm512_permutex2var_ps(a, even, c);
        }
        acc[j] = _mm512_fmadd_ps(w, v, acc[j]);
      }
    }
    float* orow = op + oy * OW + ox0;
    for (int j = 0; j < NV; ++j) {
      if (act.on) acc[j] = _mm512_min_ps(hi, _mm512_max_ps(lo, acc[j]));
      _mm512_mask_storeu_ps(orow + 16 * j, out_mask[j], acc[j]);
    }
  }
}

template <int SW>
__attribute__((target("avx512f"))) void depthwise_plane_avx512(
    const float* xp, float* op, const int32_t* tap_idx, const float* values, int32_t k0,
    int32_t k1, float bias, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kw,
    int64_t sh, int64_t ph, int64_t pw, const Activation& act, std::vector<VecTap>& scratch) {
  scratch.resize(static_cast<size_t>(std::max(k1 - k0, 0)));
  VecTap* taps = scratch.data();
  for (int64_t ox0 = 0; ox0 < OW; ox0 += 64) {
    const int nv = static_cast<int>((std::min<int64_t>(64, OW - ox0) + 15) / 16);
    int64_t nt = 0;
    for (int32_t k = k0; k < k1; ++k) {
      VecTap tp{};
      tp.ky = tap_idx[k] / kw;
      tp.off = tap_idx[k] % kw - pw;
      tp.w = values[k];
      bool any = false;
      for (int j = 0; j < 4; ++j) {
        const int64_t start = (ox0 + 16 * j) * SW + tp.off;
        tp.first[j] = j < nv ? in_row_lanes(start, W) : 0;
        tp.second[j] = j < nv && SW == 2 ? in_row_lanes(start + 16, W) : 0;
        any = any || tp.first[j] != 0 || tp.second[j] != 0;
      }
      if (any) taps[nt++] = tp;
    }
    switch (nv) {
      case 1: depthwise_segment_avx512<1, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      case 2: depthwise_segment_avx512<2, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      case 3: depthwise_segment_avx512<3, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      default: depthwise_segment_avx512<4, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
    }
  }
}

// AVX2 depthwise: as depthwise_segment_avx512, with 8-float vectors (a 64-column segment is
// NV <= 8 of them) and lane masks as int32 vectors (maskload never touches a masked-out lane).
// The masks are kept as plain int32 arrays (loaded unaligned): a std::vector does not promise
// the 32-byte alignment an __m256i member would need.
struct VecTap2 {
  int64_t ky, off;
  float w;
  int32_t first[8][8], second[8][8];
  bool full[8];  // both loads of vector j read 8 lanes inside the row: plain loads
};

inline __attribute__((target("avx2"))) __m256i lanes_of(const int32_t* m) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m));
}

inline __attribute__((target("avx2"))) __m256i avx2_in_row(int64_t start, int64_t W) {
  // Lanes i with 0 <= start + i < W: one contiguous run [a, b) of 0..7.
  const int a = static_cast<int>(std::clamp<int64_t>(-start, 0, 8));
  const int b = static_cast<int>(std::clamp<int64_t>(W - start, 0, 8));
  return _mm256_andnot_si256(avx2_lanes(a), avx2_lanes(b));
}

template <int NV, int SW>
__attribute__((target("avx2,fma"))) void depthwise_segment_avx2(
    const float* xp, float* op, const VecTap2* taps, int64_t ntaps, float bias, int64_t H,
    int64_t W, int64_t OH, int64_t OW, int64_t sh, int64_t ph, int64_t ox0,
    const Activation& act) {
  int out_lanes[NV];
  for (int j = 0; j < NV; ++j)
    out_lanes[j] = static_cast<int>(std::clamp<int64_t>(OW - ox0 - 8 * j, 0, 8));
  const __m256 b = _mm256_set1_ps(bias);
  const __m256 lo = _mm256_set1_ps(static_cast<float>(act.lo));
  const __m256 hi = _mm256_set1_ps(static_cast<float>(act.hi));
  const bool whole_rows = ox0 == 0 && OW <= 64;  // one segment: each row written in full
  for (int64_t oy = 0; oy < OH; ++oy) {
    __m256 acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = b;
    for (int64_t t = 0; t < ntaps; ++t) {
      const VecTap2& tp = taps[t];
      const int64_t iy = oy * sh - ph + tp.ky;
      if (iy < 0 || iy >= H) continue;
      const float* xr = xp + iy * W + ox0 * SW + tp.off;
      const __m256 w = _mm256_set1_ps(tp.w);
      for (int j = 0; j < NV; ++j) {
        __m256 v;
        if constexpr (SW == 1) {
          v = tp.full[j] ? _mm256_loadu_ps(xr + 8 * j)
                         : _mm256_maskload_ps(xr + 8 * j, lanes_of(tp.first[j]));
        } else {
          // Even lanes of 16 consecutive inputs: [a0 a2 c0 c2 | a4 a6 c4 c6], then the 64-bit
          // pairs reordered to [a0 a2 a4 a6 c0 c2 c4 c6].
          const bool full = tp.full[j];
          const __m256 a = full ? _mm256_loadu_ps(xr + 16 * j)
                                : _mm256_maskload_ps(xr + 16 * j, lanes_of(tp.first[j]));
          const __m256 c = full ? _mm256_loadu_ps(xr + 16 * j + 8)
                                : _mm256_maskload_ps(xr + 16 * j + 8, lanes_of(tp.second[j]));
          const __m256 e = _mm256_shuffle_ps(a, c, _MM_SHUFFLE(2, 0, 2, 0));
          v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
        }
        acc[j] = _mm256_fmadd_ps(w, v, acc[j]);
      }
    }
    float* orow = op + oy * OW + ox0;
    if (act.on) {
      for (int j = 0; j < NV; ++j) acc[j] = _mm256_min_ps(hi, _mm256_max_ps(lo, acc[j]));
    }
    if (whole_rows && oy * OW + 8 * NV <= OH * OW) {
      // The lanes past the row's end land at the start of the rows below, inside this plane,
      // which this loop writes next: full stores are safe (and cheaper than a partial one).
      for (int j = 0; j < NV; ++j) _mm256_storeu_ps(orow + 8 * j, acc[j]);
    } else {
      for (int j = 0; j < NV; ++j) store_lanes(orow + 8 * j, acc[j], out_lanes[j]);
    }
  }
}

template <int SW>
__attribute__((target("avx2,fma"))) void depthwise_plane_avx2(
    const float* xp, float* op, const int32_t* tap_idx, const float* values, int32_t k0,
    int32_t k1, float bias, int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kw,
    int64_t sh, int64_t ph, int64_t pw, const Activation& act, std::vector<VecTap2>& scratch) {
  scratch.resize(static_cast<size_t>(std::max(k1 - k0, 0)));
  VecTap2* taps = scratch.data();
  for (int64_t ox0 = 0; ox0 < OW; ox0 += 64) {
    const int nv = static_cast<int>((std::min<int64_t>(64, OW - ox0) + 7) / 8);
    int64_t nt = 0;
    for (int32_t k = k0; k < k1; ++k) {
      VecTap2& tp = taps[nt];
      tp.ky = tap_idx[k] / kw;
      tp.off = tap_idx[k] % kw - pw;
      tp.w = values[k];
      bool any = false;
      for (int j = 0; j < nv; ++j) {
        const int64_t start = (ox0 + 8 * j) * SW + tp.off;
        const __m256i f = avx2_in_row(start, W);
        const __m256i g = SW == 2 ? avx2_in_row(start + 8, W) : _mm256_setzero_si256();
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(tp.first[j]), f);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(tp.second[j]), g);
        const __m256i ones = _mm256_set1_epi32(-1);
        tp.full[j] = _mm256_testc_si256(f, ones) && (SW == 1 || _mm256_testc_si256(g, ones));
        any = any || !_mm256_testz_si256(f, f) || !_mm256_testz_si256(g, g);
      }
      if (any) ++nt;
    }
    switch (nv) {
      case 1: depthwise_segment_avx2<1, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      case 2: depthwise_segment_avx2<2, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      case 3: depthwise_segment_avx2<3, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      case 4: depthwise_segment_avx2<4, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      case 5: depthwise_segment_avx2<5, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      case 6: depthwise_segment_avx2<6, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      case 7: depthwise_segment_avx2<7, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
      default: depthwise_segment_avx2<8, SW>(xp, op, taps, nt, bias, H, W, OH, OW, sh, ph, ox0, act); break;
    }
  }
}
#endif


bool forced_portable() {
  const char* env = std::getenv("SPARSEOPT_CPU_PORTABLE");
  return env != nullptr && env[0] != '\0' && env[0] != '0';
}

bool avx512_enabled() {
#if SPARSEOPT_X86_SIMD
  static const bool supported = __builtin_cpu_supports("avx512f");
  return supported && !forced_portable();
#else
  return false;
#endif
}

bool avx2_enabled() {
#if SPARSEOPT_X86_SIMD
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported && !forced_portable();
#else
  return false;
#endif
}

}  // namespace

bool pointwise_uses_avx512() { return avx512_enabled(); }

const char* kernel_isa() { return avx512_enabled() ? "avx512" : avx2_enabled() ? "avx2" : "portable"; }

template <typename T>
void csr_pointwise_conv2d(const T* x, Planes xp, const int32_t* row_ptr, const int32_t* col_idx,
                          const T* values, const T* bias, T* out, Planes op, int64_t N, int64_t C,
                          int64_t O, int64_t HW, Activation act) {
  if (N == 0 || O == 0 || HW == 0) return;
  // Channel-major input and output: one [C, N * HW] matrix, the batch widens the rows.
  if (N > 1 && xp.sn == HW && xp.sc == N * HW && op.sn == HW && op.sc == N * HW) {
    HW *= N;
    N = 1;
  }
  const PointwisePlan p = plan_pointwise(N, O, HW);
  bool simd = false, simd2 = false;
#if SPARSEOPT_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    simd = avx512_enabled();
    simd2 = !simd && avx2_enabled();
  }
#endif
  at::parallel_for(0, p.items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / (p.tiles * p.blocks);
      const int64_t t = (i / p.blocks) % p.tiles;
      const int64_t o0 = (i % p.blocks) * p.block;
      const int64_t o1 = std::min(O, o0 + p.block);
      const int64_t t0 = t * kTile;
      const int64_t len = std::min(kTile, HW - t0);
      const T* xn = x + n * xp.sn;
      T* on = out + n * op.sn;
#if SPARSEOPT_X86_SIMD
      if constexpr (std::is_same_v<T, float>) {
        if (simd) {
          const int nv = static_cast<int>((len + 15) / 16);
          const int tail = static_cast<int>(len - 16 * (nv - 1));
          const __mmask16 last = static_cast<__mmask16>((1u << tail) - 1u);
          switch (nv) {
            case 1:
              pointwise_item_avx512<1>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, last, o0, o1, act);
              break;
            case 2:
              pointwise_item_avx512<2>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, last, o0, o1, act);
              break;
            case 3:
              pointwise_item_avx512<3>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, last, o0, o1, act);
              break;
            default:
              pointwise_item_avx512<4>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, last, o0, o1, act);
              break;
          }
          continue;
        }
        if (simd2) {
          switch ((len + 7) / 8) {
            case 1: pointwise_item_avx2<1>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len, o0, o1, act); break;
            case 2: pointwise_item_avx2<2>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len, o0, o1, act); break;
            case 3: pointwise_item_avx2<3>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len, o0, o1, act); break;
            case 4: pointwise_item_avx2<4>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len, o0, o1, act); break;
            case 5: pointwise_item_avx2<5>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len, o0, o1, act); break;
            case 6: pointwise_item_avx2<6>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len, o0, o1, act); break;
            case 7: pointwise_item_avx2<7>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len, o0, o1, act); break;
            default: pointwise_item_avx2<8>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len, o0, o1, act); break;
          }
          continue;
        }
      }
#endif
      (void)simd;
      (void)simd2;
      pointwise_item_portable<T>(xn, xp.sc, row_ptr, col_idx, values, bias, on, op.sc, t0, len,
                                 o0, o1, act);
    }
  });
}

template <typename T>
void sparse_depthwise_conv2d(const T* x, Planes xp, const int32_t* tap_ptr,
                             const int32_t* tap_idx, const T* values, const T* bias, T* out,
                             Planes op, int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH,
                             int64_t OW, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                             int64_t ph, int64_t pw, Activation act) {
  if (N == 0 || C == 0 || OH == 0 || OW == 0) return;
  const int64_t plane_out = OH * OW;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(plane_out, 1));
#if SPARSEOPT_X86_SIMD
  if constexpr (std::is_same_v<T, float>) {
    if ((sw == 1 || sw == 2) && avx512_enabled()) {
      at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
        std::vector<VecTap> scratch;
        for (int64_t p = begin; p < end; ++p) {
          const int64_t n = p / C, c = p % C;
          const float* xpl = x + n * xp.sn + c * xp.sc;
          float* opl = out + n * op.sn + c * op.sc;
          const float b = bias != nullptr ? bias[c] : 0.f;
          if (sw == 1)
            depthwise_plane_avx512<1>(xpl, opl, tap_idx, values, tap_ptr[c], tap_ptr[c + 1], b,
                                      H, W, OH, OW, kw, sh, ph, pw, act, scratch);
          else
            depthwise_plane_avx512<2>(xpl, opl, tap_idx, values, tap_ptr[c], tap_ptr[c + 1], b,
                                      H, W, OH, OW, kw, sh, ph, pw, act, scratch);
        }
      });
      return;
    }
    if ((sw == 1 || sw == 2) && avx2_enabled()) {
      at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
        std::vector<VecTap2> scratch;
        for (int64_t p = begin; p < end; ++p) {
          const int64_t n = p / C, c = p % C;
          const float* xpl = x + n * xp.sn + c * xp.sc;
          float* opl = out + n * op.sn + c * op.sc;
          const float b = bias != nullptr ? bias[c] : 0.f;
          if (sw == 1)
            depthwise_plane_avx2<1>(xpl, opl, tap_idx, values, tap_ptr[c], tap_ptr[c + 1], b, H,
                                    W, OH, OW, kw, sh, ph, pw, act, scratch);
          else
            depthwise_plane_avx2<2>(xpl, opl, tap_idx, values, tap_ptr[c], tap_ptr[c + 1], b, H,
                                    W, OH, OW, kw, sh, ph, pw, act, scratch);
        }
      });
      return;
    }
  }
#endif
  struct Tap {
    int64_t ky, off, lo, hi;  // input column of output column ox: ox * sw + off, ox in [lo, hi)
    T w;
  };
  const T lo = static_cast<T>(act.lo), hi = static_cast<T>(act.hi);
  at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
    std::vector<Tap> taps;
    taps.reserve(static_cast<size_t>(kh * kw));
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / C, c = p % C;
      const T* xpl = x + n * xp.sn + c * xp.sc;
      T* opl = out + n * op.sn + c * op.sc;
      const T b = bias != nullptr ? bias[c] : T(0);
      // The channel's nonzero taps with the output columns where they read inside the row.
      taps.clear();
      for (int32_t k = tap_ptr[c]; k < tap_ptr[c + 1]; ++k) {
        const int64_t ky = tap_idx[k] / kw, kx = tap_idx[k] % kw;
        const int64_t off = kx - pw;
        const int64_t first = off >= 0 ? 0 : (-off + sw - 1) / sw;
        const int64_t last_in = W - 1 - off;  // ox * sw <= last_in
        const int64_t end_ox = last_in < 0 ? 0 : std::min(OW, last_in / sw + 1);
        if (first >= end_ox) continue;
        taps.push_back(Tap{ky, off, first, end_ox, values[k]});
      }
      for (int64_t oy = 0; oy < OH; ++oy) {
        T* orow = opl + oy * OW;
        for (int64_t ox = 0; ox < OW; ++ox) orow[ox] = b;
        for (const Tap& tp : taps) {
          const int64_t iy = oy * sh - ph + tp.ky;
          if (iy < 0 || iy >= H) continue;
          const T* xr = xpl + iy * W;
          const T w = tp.w;
          const int64_t off = tp.off;
          if (sw == 1) {
#pragma omp simd
            for (int64_t ox = tp.lo; ox < tp.hi; ++ox) orow[ox] += w * xr[ox + off];
          } else {
            for (int64_t ox = tp.lo; ox < tp.hi; ++ox) orow[ox] += w * xr[ox * sw + off];
          }
        }
        if (act.on) {
          for (int64_t ox = 0; ox < OW; ++ox) orow[ox] = clamp_scalar(orow[ox], lo, hi);
        }
      }
    }
  });
}

#define SPARSEOPT_INSTANTIATE(T)                                                              \
  template void csr_pointwise_conv2d<T>(const T*, Planes, const int32_t*, const int32_t*,     \
                                        const T*, const T*, T*, Planes, int64_t, int64_t,     \
                                        int64_t, int64_t, Activation);                        \
  template void sparse_depthwise_conv2d<T>(const T*, Planes, const int32_t*, const int32_t*,  \
                                           const T*, const T*, T*, Planes, int64_t, int64_t,  \
                                           int64_t, int64_t, int64_t, int64_t, int64_t,       \
                                           int64_t, int64_t, int64_t, int64_t, int64_t,       \
                                           Activation);
SPARSEOPT_INSTANTIATE(float)
SPARSEOPT_INSTANTIATE(double)
#undef SPARSEOPT_INSTANTIATE

}  // namespace cpu
}  // namespace sparseopt

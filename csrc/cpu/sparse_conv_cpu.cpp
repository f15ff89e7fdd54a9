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
#define SPARSEOPT_HAVE_AVX512_PATH 1
#else
#define SPARSEOPT_HAVE_AVX512_PATH 0
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

// Portable item: accumulators in an L1 array, the inner loop over the tile is contiguous.
template <typename T>
void pointwise_item_portable(const T* xn, const int32_t* row_ptr, const int32_t* col_idx,
                             const T* values, const T* bias, T* on, int64_t HW, int64_t t0,
                             int64_t len, int64_t o0, int64_t o1) {
  T acc[kTile];
  for (int64_t o = o0; o < o1; ++o) {
    const T b = bias != nullptr ? bias[o] : T(0);
    for (int64_t j = 0; j < len; ++j) acc[j] = b;
    for (int32_t k = row_ptr[o]; k < row_ptr[o + 1]; ++k) {
      const T* xr = xn + static_cast<int64_t>(col_idx[k]) * HW + t0;
      const T w = values[k];
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) acc[j] += w * xr[j];
    }
    std::memcpy(on + o * HW + t0, acc, static_cast<size_t>(len) * sizeof(T));
  }
}

#if SPARSEOPT_HAVE_AVX512_PATH
// acc[j] += w * x[16 j .. 16 j + 15] for the NV vectors of a tile; the last one is masked (the
// tile's tail), so no load reads past the end of a row.
template <int NV>
__attribute__((target("avx512f"))) inline void axpy_tile(__m512* acc, __m512 w, const float* x,
                                                         __mmask16 last) {
  for (int j = 0; j < NV - 1; ++j) acc[j] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 16 * j), acc[j]);
  acc[NV - 1] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(last, x + 16 * (NV - 1)), acc[NV - 1]);
}

template <int NV>
__attribute__((target("avx512f"))) inline void store_tile(float* out, const __m512* acc,
                                                          __mmask16 last) {
  for (int j = 0; j < NV - 1; ++j) _mm512_storeu_ps(out + 16 * j, acc[j]);
  _mm512_mask_storeu_ps(out + 16 * (NV - 1), last, acc[NV - 1]);
}

// AVX-512 item: the tile's accumulators stay in registers; two output channels are walked at
// once (2 x NV independent FMA chains) to hide the FMA latency.
template <int NV>
__attribute__((target("avx512f"))) void pointwise_item_avx512(
    const float* xn, const int32_t* row_ptr, const int32_t* col_idx, const float* values,
    const float* bias, float* on, int64_t HW, int64_t t0, __mmask16 last, int64_t o0,
    int64_t o1) {
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
      axpy_tile<NV>(a, _mm512_set1_ps(values[ka]), xt + static_cast<int64_t>(col_idx[ka]) * HW,
                    last);
      axpy_tile<NV>(b, _mm512_set1_ps(values[kb]), xt + static_cast<int64_t>(col_idx[kb]) * HW,
                    last);
    }
    for (; ka < ea; ++ka)
      axpy_tile<NV>(a, _mm512_set1_ps(values[ka]), xt + static_cast<int64_t>(col_idx[ka]) * HW,
                    last);
    for (; kb < eb; ++kb)
      axpy_tile<NV>(b, _mm512_set1_ps(values[kb]), xt + static_cast<int64_t>(col_idx[kb]) * HW,
                    last);
    store_tile<NV>(ot + o * HW, a, last);
    store_tile<NV>(ot + (o + 1) * HW, b, last);
  }
  if (o < o1) {
    __m512 a[NV];
    const __m512 ba = _mm512_set1_ps(bias != nullptr ? bias[o] : 0.f);
    for (int j = 0; j < NV; ++j) a[j] = ba;
    for (int32_t k = row_ptr[o]; k < row_ptr[o + 1]; ++k)
      axpy_tile<NV>(a, _mm512_set1_ps(values[k]), xt + static_cast<int64_t>(col_idx[k]) * HW,
                    last);
    store_tile<NV>(ot + o * HW, a, last);
  }
}
#endif

#if SPARSEOPT_HAVE_AVX512_PATH
// One nonzero tap of a depthwise filter for the AVX-512 row kernel: its row offset, weight, and
// per output vector the lanes (output columns) where it reads inside the input row.
struct VecTap {
  int64_t ky, off;
  float w;
  __mmask16 lanes[4];
};

// Depthwise plane, stride 1 along the width, OW <= 16 * NV: each output row is NV registers;
// each tap adds one masked load + FMA per register (masked-out lanes are never read, so the
// shifted pointer may start before the row).
template <int NV>
__attribute__((target("avx512f"))) void depthwise_plane_avx512(
    const float* xp, float* op, const VecTap* taps, int64_t ntaps, float bias, int64_t H,
    int64_t W, int64_t OH, int64_t OW, int64_t sh, int64_t ph) {
  __mmask16 out_mask[NV];
  for (int j = 0; j < NV; ++j) {
    const int64_t n = std::min<int64_t>(16, std::max<int64_t>(0, OW - 16 * j));
    out_mask[j] = static_cast<__mmask16>((1u << n) - 1u);
  }
  const __m512 b = _mm512_set1_ps(bias);
  for (int64_t oy = 0; oy < OH; ++oy) {
    __m512 acc[NV];
    for (int j = 0; j < NV; ++j) acc[j] = b;
    for (int64_t t = 0; t < ntaps; ++t) {
      const VecTap& tp = taps[t];
      const int64_t iy = oy * sh - ph + tp.ky;
      if (iy < 0 || iy >= H) continue;
      const float* xr = xp + iy * W + tp.off;
      const __m512 w = _mm512_set1_ps(tp.w);
      for (int j = 0; j < NV; ++j)
        acc[j] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(tp.lanes[j], xr + 16 * j), acc[j]);
    }
    float* orow = op + oy * OW;
    for (int j = 0; j < NV; ++j) _mm512_mask_storeu_ps(orow + 16 * j, out_mask[j], acc[j]);
  }
}
#endif

bool avx512_enabled() {
#if SPARSEOPT_HAVE_AVX512_PATH
  static const bool supported = __builtin_cpu_supports("avx512f");
  const char* env = std::getenv("SPARSEOPT_CPU_PORTABLE");
  const bool forced_portable = env != nullptr && env[0] != '\0' && env[0] != '0';
  return supported && !forced_portable;
#else
  return false;
#endif
}

}  // namespace

bool pointwise_uses_avx512() { return avx512_enabled(); }

template <typename T>
void csr_pointwise_conv2d(const T* x, const int32_t* row_ptr, const int32_t* col_idx,
                          const T* values, const T* bias, T* out, int64_t N, int64_t C, int64_t O,
                          int64_t HW) {
  if (N == 0 || O == 0 || HW == 0) return;
  const PointwisePlan p = plan_pointwise(N, O, HW);
  bool simd = false;
#if SPARSEOPT_HAVE_AVX512_PATH
  if constexpr (std::is_same_v<T, float>) simd = avx512_enabled();
#endif
  at::parallel_for(0, p.items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n = i / (p.tiles * p.blocks);
      const int64_t t = (i / p.blocks) % p.tiles;
      const int64_t o0 = (i % p.blocks) * p.block;
      const int64_t o1 = std::min(O, o0 + p.block);
      const int64_t t0 = t * kTile;
      const int64_t len = std::min(kTile, HW - t0);
      const T* xn = x + n * C * HW;
      T* on = out + n * O * HW;
#if SPARSEOPT_HAVE_AVX512_PATH
      if constexpr (std::is_same_v<T, float>) {
        if (simd) {
          const int nv = static_cast<int>((len + 15) / 16);
          const int tail = static_cast<int>(len - 16 * (nv - 1));
          const __mmask16 last = static_cast<__mmask16>((1u << tail) - 1u);
          switch (nv) {
            case 1:
              pointwise_item_avx512<1>(xn, row_ptr, col_idx, values, bias, on, HW, t0, last, o0, o1);
              break;
            case 2:
              pointwise_item_avx512<2>(xn, row_ptr, col_idx, values, bias, on, HW, t0, last, o0, o1);
              break;
            case 3:
              pointwise_item_avx512<3>(xn, row_ptr, col_idx, values, bias, on, HW, t0, last, o0, o1);
              break;
            default:
              pointwise_item_avx512<4>(xn, row_ptr, col_idx, values, bias, on, HW, t0, last, o0, o1);
              break;
          }
          continue;
        }
      }
#endif
      (void)simd;
      pointwise_item_portable<T>(xn, row_ptr, col_idx, values, bias, on, HW, t0, len, o0, o1);
    }
  });
}

template <typename T>
void sparse_depthwise_conv2d(const T* x, const int32_t* tap_ptr, const int32_t* tap_idx,
                             const T* values, const T* bias, T* out, int64_t N, int64_t C,
                             int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kh, int64_t kw,
                             int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  if (N == 0 || C == 0 || OH == 0 || OW == 0) return;
  struct Tap {
    int64_t ky, off, lo, hi;  // input column of output column ox: ox * sw + off, ox in [lo, hi)
    T w;
  };
  const int64_t plane_out = OH * OW;
#if SPARSEOPT_HAVE_AVX512_PATH
  if constexpr (std::is_same_v<T, float>) {
    if (sw == 1 && OW <= 64 && avx512_enabled()) {
      const int nv = static_cast<int>((OW + 15) / 16);
      const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(plane_out, 1));
      at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
        std::vector<VecTap> taps;
        taps.reserve(static_cast<size_t>(kh * kw));
        for (int64_t p = begin; p < end; ++p) {
          const int64_t c = p % C;
          taps.clear();
          for (int32_t k = tap_ptr[c]; k < tap_ptr[c + 1]; ++k) {
            VecTap tp{};
            tp.ky = tap_idx[k] / kw;
            tp.off = tap_idx[k] % kw - pw;  // input column of output column ox: ox + off
            tp.w = values[k];
            const int64_t lo = std::max<int64_t>(0, -tp.off);
            const int64_t hi = std::min<int64_t>(OW, W - tp.off);
            bool any = false;
            for (int j = 0; j < 4; ++j) {
              const int64_t a = std::max<int64_t>(lo, 16 * j), z = std::min<int64_t>(hi, 16 * j + 16);
              uint32_t bits = 0;
              if (a < z) bits = ((z - a == 16 ? 0xFFFFu : ((1u << (z - a)) - 1u)) << (a - 16 * j));
              tp.lanes[j] = static_cast<__mmask16>(bits);
              any = any || bits != 0;
            }
            if (any) taps.push_back(tp);
          }
          const float* xp = x + p * H * W;
          float* op = out + p * plane_out;
          const float b = bias != nullptr ? bias[c] : 0.f;
          const int64_t nt = static_cast<int64_t>(taps.size());
          switch (nv) {
            case 1: depthwise_plane_avx512<1>(xp, op, taps.data(), nt, b, H, W, OH, OW, sh, ph); break;
            case 2: depthwise_plane_avx512<2>(xp, op, taps.data(), nt, b, H, W, OH, OW, sh, ph); break;
            case 3: depthwise_plane_avx512<3>(xp, op, taps.data(), nt, b, H, W, OH, OW, sh, ph); break;
            default: depthwise_plane_avx512<4>(xp, op, taps.data(), nt, b, H, W, OH, OW, sh, ph); break;
          }
        }
      });
      return;
    }
  }
#endif
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(plane_out, 1));
  at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
    std::vector<Tap> taps;
    taps.reserve(static_cast<size_t>(kh * kw));
    for (int64_t p = begin; p < end; ++p) {
      const int64_t c = p % C;
      const T* xp = x + p * H * W;
      T* op = out + p * plane_out;
      const T b = bias != nullptr ? bias[c] : T(0);
      // The channel's nonzero taps with the output columns where they read inside the row.
      taps.clear();
      for (int32_t k = tap_ptr[c]; k < tap_ptr[c + 1]; ++k) {
        const int64_t ky = tap_idx[k] / kw, kx = tap_idx[k] % kw;
        const int64_t off = kx - pw;
        const int64_t lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
        const int64_t last_in = W - 1 - off;  // ox * sw <= last_in
        const int64_t hi = last_in < 0 ? 0 : std::min(OW, last_in / sw + 1);
        if (lo >= hi) continue;
        taps.push_back(Tap{ky, off, lo, hi, values[k]});
      }
      for (int64_t oy = 0; oy < OH; ++oy) {
        T* orow = op + oy * OW;
        for (int64_t ox = 0; ox < OW; ++ox) orow[ox] = b;
        for (const Tap& tp : taps) {
          const int64_t iy = oy * sh - ph + tp.ky;
          if (iy < 0 || iy >= H) continue;
          const T* xr = xp + iy * W;
          const T w = tp.w;
          const int64_t off = tp.off;
          if (sw == 1) {
#pragma omp simd
            for (int64_t ox = tp.lo; ox < tp.hi; ++ox) orow[ox] += w * xr[ox + off];
          } else {
            for (int64_t ox = tp.lo; ox < tp.hi; ++ox) orow[ox] += w * xr[ox * sw + off];
          }
        }
      }
    }
  });
}

template void csr_pointwise_conv2d<float>(const float*, const int32_t*, const int32_t*,
                                          const float*, const float*, float*, int64_t, int64_t,
                                          int64_t, int64_t);
template void csr_pointwise_conv2d<double>(const double*, const int32_t*, const int32_t*,
                                           const double*, const double*, double*, int64_t, int64_t,
                                           int64_t, int64_t);
template void sparse_depthwise_conv2d<float>(const float*, const int32_t*, const int32_t*,
                                             const float*, const float*, float*, int64_t, int64_t,
                                             int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                             int64_t, int64_t, int64_t, int64_t);
template void sparse_depthwise_conv2d<double>(const double*, const int32_t*, const int32_t*,
                                              const double*, const double*, double*, int64_t,
                                              int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                              int64_t, int64_t, int64_t, int64_t, int64_t);

}  // namespace cpu
}  // namespace sparseopt

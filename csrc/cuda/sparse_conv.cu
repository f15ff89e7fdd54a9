// CUDA kernels of the compressed sparse convolutions (NCHW contiguous, int32 CSR / tap lists).
//
// Pointwise: one block per (image, output channel) row and spatial chunk; the threads run along
// the spatial dim, so each nonzero's input row is read coalesced, and the row's (col, value)
// pairs are staged through shared memory in chunks (one global read per nonzero per block).
// Depthwise: one thread per output element, looping over its channel's nonzero taps only.
// No torch headers: see sparse_conv_launch.h.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>

#include "kernel_launch.cuh"
#include "sparse_conv_launch.h"

namespace sparseopt {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kStage = 256;  // nonzeros staged in shared memory at a time

template <typename T>
__global__ void csr_pointwise_kernel(const T* __restrict__ x, const int32_t* __restrict__ row_ptr,
                                     const int32_t* __restrict__ col_idx,
                                     const T* __restrict__ values, const T* __restrict__ bias,
                                     T* __restrict__ out, int64_t C, int64_t O, int64_t HW) {
  __shared__ int64_t s_off[kStage];
  __shared__ T s_val[kStage];
  const int64_t row = blockIdx.x;  // n * O + o
  const int64_t n = row / O, o = row % O;
  const T* xn = x + n * C * HW;
  const int32_t begin = row_ptr[o], end = row_ptr[o + 1];
  const T b = bias != nullptr ? bias[o] : T(0);
  // Every thread of the block runs the same number of outer iterations (the __syncthreads()
  // below must be reached by all of them), whatever its spatial position.
  for (int64_t base = static_cast<int64_t>(blockIdx.y) * blockDim.x; base < HW;
       base += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t s = base + threadIdx.x;
    T acc = b;
    for (int32_t k0 = begin; k0 < end; k0 += kStage) {
      const int32_t count = min(kStage, end - k0);
      __syncthreads();
      for (int32_t i = threadIdx.x; i < count; i += blockDim.x) {
        s_off[i] = static_cast<int64_t>(col_idx[k0 + i]) * HW;
        s_val[i] = values[k0 + i];
      }
      __syncthreads();
      if (s < HW) {
        for (int32_t i = 0; i < count; ++i) acc += s_val[i] * xn[s_off[i] + s];
      }
    }
    if (s < HW) out[row * HW + s] = acc;
  }
}

template <typename T>
__global__ void sparse_depthwise_kernel(const T* __restrict__ x, const int32_t* __restrict__ tap_ptr,
                                        const int32_t* __restrict__ tap_idx,
                                        const T* __restrict__ values, const T* __restrict__ bias,
                                        T* __restrict__ out, int64_t total, int64_t C, int64_t H,
                                        int64_t W, int64_t OH, int64_t OW, int64_t kw, int64_t sh,
                                        int64_t sw, int64_t ph, int64_t pw) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = i % OW;
    const int64_t oy = (i / OW) % OH;
    const int64_t plane = i / (OW * OH);  // n * C + c
    const int64_t c = plane % C;
    const T* xp = x + plane * H * W;
    T acc = bias != nullptr ? bias[c] : T(0);
    for (int32_t k = tap_ptr[c]; k < tap_ptr[c + 1]; ++k) {
      const int64_t ky = tap_idx[k] / kw, kx = tap_idx[k] % kw;
      const int64_t iy = oy * sh - ph + ky, ix = ox * sw - pw + kx;
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc += values[k] * xp[iy * W + ix];
    }
    out[i] = acc;
  }
}

}  // namespace

template <typename T>
void launch_csr_pointwise_conv2d(const T* x, const int32_t* row_ptr, const int32_t* col_idx,
                                 const T* values, const T* bias, T* out, int64_t N, int64_t C,
                                 int64_t O, int64_t HW, void* stream) {
  if (N == 0 || O == 0 || HW == 0) return;
  const int64_t rows = N * O;
  if (rows > 2147483647LL) throw std::runtime_error("sparseopt: N * O too large for one launch");
  const dim3 grid(static_cast<unsigned>(rows),
                  static_cast<unsigned>(std::min<int64_t>((HW + kThreads - 1) / kThreads, 65535)));
  SPARSEOPT_LAUNCH(grid, kThreads, 0, static_cast<cudaStream_t>(stream), csr_pointwise_kernel<T>)(
      x, row_ptr, col_idx, values, bias, out, C, O, HW);
  check_launch("csr_pointwise_kernel");
}

template <typename T>
void launch_sparse_depthwise_conv2d(const T* x, const int32_t* tap_ptr, const int32_t* tap_idx,
                                    const T* values, const T* bias, T* out, int64_t N, int64_t C,
                                    int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kh,
                                    int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                    void* stream) {
  (void)kh;
  const int64_t total = N * C * OH * OW;
  if (total == 0) return;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20);
  SPARSEOPT_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(stream),
                   sparse_depthwise_kernel<T>)(x, tap_ptr, tap_idx, values, bias, out, total, C, H,
                                               W, OH, OW, kw, sh, sw, ph, pw);
  check_launch("sparse_depthwise_kernel");
}

template void launch_csr_pointwise_conv2d<float>(const float*, const int32_t*, const int32_t*,
                                                 const float*, const float*, float*, int64_t,
                                                 int64_t, int64_t, int64_t, void*);
template void launch_csr_pointwise_conv2d<double>(const double*, const int32_t*, const int32_t*,
                                                  const double*, const double*, double*, int64_t,
                                                  int64_t, int64_t, int64_t, void*);
template void launch_sparse_depthwise_conv2d<float>(const float*, const int32_t*, const int32_t*,
                                                    const float*, const float*, float*, int64_t,
                                                    int64_t, int64_t, int64_t, int64_t, int64_t,
                                                    int64_t, int64_t, int64_t, int64_t, int64_t,
                                                    int64_t, void*);
template void launch_sparse_depthwise_conv2d<double>(const double*, const int32_t*,
                                                     const int32_t*, const double*, const double*,
                                                     double*, int64_t, int64_t, int64_t, int64_t,
                                                     int64_t, int64_t, int64_t, int64_t, int64_t,
                                                     int64_t, int64_t, int64_t, void*);

}  // namespace cuda
}  // namespace sparseopt

// CPU kernels of the compressed sparse convolutions (raw pointers, no torch types).
//
// Activations are 4-D [N, C, H, W] whose H x W planes are contiguous; where the planes lie is
// given by two strides (elements): plane (n, c) starts at n * sn + c * sc. NCHW is (C*H*W, H*W);
// the channel-major layout of sparseopt's fused inference ("CNHW", memory [C, N, H, W]) is
// (H*W, N*H*W). In the channel-major layout a 1x1 convolution sees one [C, N*H*W] matrix, so the
// batch widens the vectorised dim instead of repeating small maps.
//
// Pointwise (1x1, stride 1): the weight is CSR over output channels (row_ptr[O + 1], col_idx[nnz]
// input channels, values[nnz]), and out[n, o, :] = act(bias[o] + sum_k values[k] x[n, col_idx[k], :])
// is an AXPY of input rows, vectorised along the spatial dim. The work is split into (image,
// spatial tile, output-channel block) items run by at::parallel_for (OpenMP); a tile's
// accumulators live in registers (AVX-512 path) or in a small L1 array (portable path), and the
// input tile x[n, :, tile] is reused across all output channels while it sits in L1/L2.
//
// Depthwise: per channel the list of its nonzero taps (tap_ptr[C + 1], tap_idx[k] = ky * kw + kx,
// values[k]); each output row is the sum over the nonzero taps of a shifted (and strided) input
// row, so zero taps cost nothing. Parallel over (image, channel) planes.
//
// act: the epilogue clamp to [lo, hi] (ReLU: [0, inf), ReLU6: [0, 6]); NaN stays NaN, as in
// torch.clamp. Off (`on == false`) for the plain ops, whose results are exactly the sums.
//
// Both are explicitly instantiated for float and double in sparse_conv_cpu.cpp. The float
// kernels use AVX-512 when the CPU has it, else AVX2 + FMA (the pointwise kernel), checked at run
// time, unless the environment variable SPARSEOPT_CPU_PORTABLE=1 forces the portable loops (the
// tests run both).
#pragma once

#include <cstdint>

namespace sparseopt {
namespace cpu {

struct Activation {
  bool on = false;
  double lo = 0.0, hi = 0.0;
};

// Where the planes of an activation lie (see above).
struct Planes {
  int64_t sn, sc;
};

template <typename T>
void csr_pointwise_conv2d(const T* x, Planes xp, const int32_t* row_ptr, const int32_t* col_idx,
                          const T* values, const T* bias, T* out, Planes op, int64_t N, int64_t C,
                          int64_t O, int64_t HW, Activation act);

template <typename T>
void sparse_depthwise_conv2d(const T* x, Planes xp, const int32_t* tap_ptr,
                             const int32_t* tap_idx, const T* values, const T* bias, T* out,
                             Planes op, int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH,
                             int64_t OW, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                             int64_t ph, int64_t pw, Activation act);

// True when the float kernels will take the AVX-512 path on this CPU right now.
bool pointwise_uses_avx512();

// The float kernels' path on this CPU right now: "avx512", "avx2" (AVX2 + FMA) or "portable".
const char* kernel_isa();

}  // namespace cpu
}  // namespace sparseopt

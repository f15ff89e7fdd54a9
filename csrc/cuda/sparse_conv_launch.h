// The boundary between the torch side (csrc/ops/sparse_conv.cpp) and the CUDA kernels of the
// compressed sparse convolutions (csrc/cuda/sparse_conv.cu).
//
// No torch and no CUDA headers here: the launchers take raw device pointers, sizes and a
// cudaStream_t passed as void*. Formats as in csrc/cpu/sparse_conv_cpu.h (NCHW contiguous,
// int32 CSR / tap lists). Each launcher throws std::runtime_error on a CUDA launch error.
#pragma once

#include <cstdint>

namespace sparseopt {
namespace cuda {

// out[n, o, :] = bias[o] + sum_{k in row o} values[k] * x[n, col_idx[k], :]; bias may be null.
template <typename T>
void launch_csr_pointwise_conv2d(const T* x, const int32_t* row_ptr, const int32_t* col_idx,
                                 const T* values, const T* bias, T* out, int64_t N, int64_t C,
                                 int64_t O, int64_t HW, void* stream);

// Depthwise convolution over each channel's list of nonzero taps (tap_idx = ky * kw + kx).
template <typename T>
void launch_sparse_depthwise_conv2d(const T* x, const int32_t* tap_ptr, const int32_t* tap_idx,
                                    const T* values, const T* bias, T* out, int64_t N, int64_t C,
                                    int64_t H, int64_t W, int64_t OH, int64_t OW, int64_t kh,
                                    int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                    void* stream);

}  // namespace cuda
}  // namespace sparseopt

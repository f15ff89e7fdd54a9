// Which tensors the ops hand to the CUDA kernels (csrc/cuda/), and on which stream.
//
// Normally: CUDA tensors, on the current stream of their device. In the host emulation build
// (SPARSEOPT_CUDA_EMULATION: csrc/cuda/*.cu compiled as C++, see csrc/emulation/emulation.h)
// the ops run CPU tensors through the CUDA kernels instead of the CPU loops, so that the tests
// can execute every kernel on a machine without a GPU.
#pragma once

#include <c10/core/Device.h>

#if defined(SPARSEOPT_WITH_CUDA) && !defined(SPARSEOPT_CUDA_EMULATION)
#include <c10/cuda/CUDAStream.h>
#endif

namespace sparseopt {

#ifdef SPARSEOPT_CUDA_EMULATION
inline bool runs_cuda_kernels(const c10::Device& device) { return device.is_cpu(); }
inline void* cuda_stream_of(const c10::Device&) { return nullptr; }  // launches are synchronous
#elif defined(SPARSEOPT_WITH_CUDA)
inline bool runs_cuda_kernels(const c10::Device& device) { return device.is_cuda(); }
inline void* cuda_stream_of(const c10::Device& device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}
#else
inline bool runs_cuda_kernels(const c10::Device&) { return false; }
#endif

}  // namespace sparseopt

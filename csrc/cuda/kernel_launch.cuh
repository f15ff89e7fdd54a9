// The one way csrc/cuda/ launches a kernel, and checks the launch:
//
//   SPARSEOPT_LAUNCH(grid, block, shared_bytes, stream, kernel<T>)(args...);
//   check_launch("kernel");
//
// With nvcc this is kernel<T><<<grid, block, shared_bytes, stream>>>(args...). In the host
// emulation build (SPARSEOPT_CUDA_EMULATION, csrc/emulation/) it runs the grid on host threads.
// The kernel comes last so that the commas of its template arguments survive the macro.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#ifdef SPARSEOPT_CUDA_EMULATION
#define SPARSEOPT_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ((void)(shared_bytes), (void)(stream), ::sparseopt::emu::launch((grid), (block), &__VA_ARGS__))
#else
#define SPARSEOPT_LAUNCH(grid, block, shared_bytes, stream, ...) \
  __VA_ARGS__<<<(grid), (block), (shared_bytes), (stream)>>>
#endif

namespace sparseopt {
namespace cuda {

// Throws on an error of the last launch (a bad configuration; in emulation also a barrier not
// reached by every thread of a block).
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("sparseopt: CUDA launch of ") + what +
                             " failed: " + cudaGetErrorString(err));
  }
}

}  // namespace cuda
}  // namespace sparseopt

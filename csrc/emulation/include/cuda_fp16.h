// Stand-in for CUDA's cuda_fp16.h in the host emulation build: the __half type and the
// conversions the kernels use. As in CUDA, __half converts implicitly to and from float unless
// __CUDA_NO_HALF_CONVERSIONS__ is defined (torch's CUDAExtension defines it, and so does the
// emulation build, so code that relies on implicit conversions fails here as in the real build).
#pragma once

#include "../emulation.h"
#include "half_bits.h"

struct __half {
  unsigned short __x;
  __half() = default;
#ifndef __CUDA_NO_HALF_CONVERSIONS__
  __half(float f) : __x(sparseopt::emu::float_to_half_bits(f)) {}
  operator float() const { return sparseopt::emu::half_bits_to_float(__x); }
#endif
};

inline float __half2float(__half h) { return sparseopt::emu::half_bits_to_float(h.__x); }
inline __half __float2half_rn(float f) {
  __half h;
  h.__x = sparseopt::emu::float_to_half_bits(f);
  return h;
}

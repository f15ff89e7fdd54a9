// Stand-in for CUDA's cuda_bf16.h in the host emulation build (see cuda_fp16.h):
// __nv_bfloat16 converts implicitly unless __CUDA_NO_BFLOAT16_CONVERSIONS__ is defined.
#pragma once

#include "../emulation.h"
#include "half_bits.h"

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
#ifndef __CUDA_NO_BFLOAT16_CONVERSIONS__
  __nv_bfloat16(float f) : __x(sparseopt::emu::float_to_bfloat16_bits(f)) {}
  operator float() const { return sparseopt::emu::bfloat16_bits_to_float(__x); }
#endif
};

inline float __bfloat162float(__nv_bfloat16 b) {
  return sparseopt::emu::bfloat16_bits_to_float(b.__x);
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  __nv_bfloat16 b;
  b.__x = sparseopt::emu::float_to_bfloat16_bits(f);
  return b;
}

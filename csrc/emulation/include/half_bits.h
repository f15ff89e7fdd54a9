// Round-to-nearest-even conversions between float and the 16-bit formats, as CUDA's
// __float2half_rn / __float2bfloat16_rn and their inverses compute them (written from the IEEE
// 754 definitions; tests/emulation compares them with the real CUDA headers on every 16-bit
// pattern). A NaN becomes 0x7fff in both formats, and a NaN half 0x7fffffff, as in CUDA.
#pragma once

#include <cstdint>
#include <cstring>

namespace sparseopt {
namespace emu {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Drops the low `shift` bits of `value`, rounding to nearest, ties to even.
inline uint32_t round_shift_rne(uint32_t value, int shift) {
  if (shift <= 0) return value;
  if (shift >= 32) return 0;
  const uint32_t kept = value >> shift;
  const uint32_t rest = value & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
}

inline uint16_t float_to_half_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u) return 0x7fffu;                        // NaN
  if (mag == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // inf
  const int exp = static_cast<int>(mag >> 23) - 127;           // unbiased
  uint32_t mant = mag & 0x7fffffu;
  if (exp >= 16) return static_cast<uint16_t>(sign | 0x7c00u);  // overflows to inf
  if (exp >= -14) {
    // Normal half: 10 mantissa bits; a carry out of the mantissa moves into the exponent
    // (and past the largest exponent to inf) by plain addition.
    const uint32_t biased = static_cast<uint32_t>(exp + 15) << 10;
    const uint32_t rounded = biased + round_shift_rne(mant, 13);
    return static_cast<uint16_t>(sign | (rounded > 0x7c00u ? 0x7c00u : rounded));
  }
  // Subnormal half (or zero): value = m * 2^-24 with the implicit bit made explicit.
  if (exp < -25) return sign;  // below half the smallest subnormal (2^-25): rounds to zero
  mant |= 0x800000u;                     // 24-bit significand, value = mant * 2^(exp-23)
  const int shift = -exp - 1;            // to units of 2^-24: (exp - 23) + 24 = exp + 1
  return static_cast<uint16_t>(sign | round_shift_rne(mant, shift));
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) {  // inf, or NaN: CUDA's conversion gives the canonical NaN 0x7fffffff
    return bits_float(mant == 0 ? (sign | 0x7f800000u) : 0x7fffffffu);
  }
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);
  // Subnormal: normalise.
  int e = -14;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  mant &= 0x3ffu;
  return bits_float(sign | (static_cast<uint32_t>(e + 127) << 23) | (mant << 13));
}

inline uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;  // NaN
  // Rounding the low 16 bits away; a carry runs into the exponent (and to inf) by addition.
  return static_cast<uint16_t>(round_shift_rne(u, 16));
}

inline float bfloat16_bits_to_float(uint16_t b) {
  return bits_float(static_cast<uint32_t>(b) << 16);
}

}  // namespace emu
}  // namespace sparseopt

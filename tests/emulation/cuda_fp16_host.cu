// Ground truth for the emulation's stand-in cuda_fp16.h / cuda_bf16.h: the real CUDA headers'
// conversions, run on the host (nvcc compiles this file's host code with them).
//
//   cuda_fp16_host IN OUT: IN holds n float32 values; OUT gets n uint16 __float2half_rn bits,
//   n uint16 __float2bfloat16_rn bits, then for every 16-bit pattern p (65,536 each) the uint32
//   bits of __half2float(p) and of __bfloat162float(p).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = std::fopen(argv[1], "rb");
  if (!in) return 2;
  std::vector<float> x;
  float v;
  while (std::fread(&v, sizeof(v), 1, in) == 1) x.push_back(v);
  std::fclose(in);
  std::vector<uint16_t> half(x.size()), bf16(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const __half h = __float2half_rn(x[i]);
    const __nv_bfloat16 b = __float2bfloat16_rn(x[i]);
    std::memcpy(&half[i], &h, 2);
    std::memcpy(&bf16[i], &b, 2);
  }
  std::vector<uint32_t> from_half(65536), from_bf16(65536);
  for (uint32_t p = 0; p < 65536; ++p) {
    const uint16_t bits = static_cast<uint16_t>(p);
    __half h;
    __nv_bfloat16 b;
    std::memcpy(&h, &bits, 2);
    std::memcpy(&b, &bits, 2);
    const float fh = __half2float(h), fb = __bfloat162float(b);
    std::memcpy(&from_half[p], &fh, 4);
    std::memcpy(&from_bf16[p], &fb, 4);
  }
  FILE* out = std::fopen(argv[2], "wb");
  if (!out) return 2;
  std::fwrite(half.data(), 2, half.size(), out);
  std::fwrite(bf16.data(), 2, bf16.size(), out);
  std::fwrite(from_half.data(), 4, 65536, out);
  std::fwrite(from_bf16.data(), 4, 65536, out);
  std::fclose(out);
  return 0;
}

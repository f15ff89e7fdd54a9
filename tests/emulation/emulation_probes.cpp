// Test-only ops of the emulation build (registered as torch.ops.sparseopt_emu.*, see
// emulated.py): the stand-in 16-bit conversions, the multi-tensor kernel's launch constants (so
// that the tests can size their inputs around chunk and table edges) and the rules' pow_step_.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "cuda/multi_tensor_apply.cuh"
#include "rules/common.h"

namespace sparseopt {
namespace {

at::Tensor bits_to_float(const at::Tensor& bits, bool bfloat16) {
  TORCH_CHECK(bits.scalar_type() == at::kInt, "bits must be int32");
  const at::Tensor b = bits.contiguous();
  at::Tensor out = at::empty(b.sizes(), b.options().dtype(at::kFloat));
  const int32_t* src = b.data_ptr<int32_t>();
  float* dst = out.data_ptr<float>();
  for (int64_t i = 0; i < b.numel(); ++i) {
    if (bfloat16) {
      __nv_bfloat16 h;
      h.__x = static_cast<unsigned short>(src[i]);
      dst[i] = __bfloat162float(h);
    } else {
      __half h;
      h.__x = static_cast<unsigned short>(src[i]);
      dst[i] = __half2float(h);
    }
  }
  return out;
}

at::Tensor float_to_bits(const at::Tensor& x, bool bfloat16) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "x must be float32");
  const at::Tensor c = x.contiguous();
  at::Tensor out = at::empty(c.sizes(), c.options().dtype(at::kInt));
  const float* src = c.data_ptr<float>();
  int32_t* dst = out.data_ptr<int32_t>();
  for (int64_t i = 0; i < c.numel(); ++i) {
    dst[i] = bfloat16 ? __float2bfloat16_rn(src[i]).__x : __float2half_rn(src[i]).__x;
  }
  return out;
}

std::vector<int64_t> launch_constants() {
  using namespace cuda;
  return {kChunkSize,
          kMaxBlocks,
          kBlockSize,
          kILP,
          max_tensors_for_depth(1),
          max_tensors_for_depth(2),
          max_tensors_for_depth(3),
          max_tensors_for_depth(4),
          max_tensors_for_depth(5)};
}

// [beta^t, sqrt(1 - beta^t)] for t = 1 .. t_max as the rules compute them on a GPU
// (rules::pow_exact_ and the correctly rounded sqrt).
at::Tensor bias_corrections(double beta, int64_t t_max) {
  at::Tensor out = at::empty({2, t_max}, at::TensorOptions().dtype(at::kDouble));
  double* p = out.data_ptr<double>();
  for (int64_t t = 1; t <= t_max; ++t) {
    p[t - 1] = rules::pow_exact_(beta, static_cast<double>(t));
    p[t_max + t - 1] = rules::sqrt_(1 - p[t - 1]);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sparseopt, m) {
  m.def("bits_to_float(Tensor bits, bool bfloat16) -> Tensor", &bits_to_float);
  m.def("float_to_bits(Tensor x, bool bfloat16) -> Tensor", &float_to_bits);
  m.def("launch_constants() -> int[]", &launch_constants);
  m.def("bias_corrections(float beta, int t_max) -> Tensor", &bias_corrections);
}

}  // namespace sparseopt

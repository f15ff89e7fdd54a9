// Fused multi-tensor element-wise kernel, after PyTorch's multi_tensor_apply and apex.
//
// One launch covers many tensors: the tensor table (addresses, sizes, step pointers) and a
// block -> (tensor, chunk) map travel in the kernel's parameter space, so no host-to-device copy
// and no allocation happen per step, and the launch is CUDA-graph capturable. Each block runs one
// chunk of kChunkSize elements: vectorised loads/stores of kILP elements per thread where all
// the chunk's pointers are aligned, a scalar loop for the rest. The per-element formula is the
// rule's Op from csrc/rules/, the same inline function the CPU loop calls.
//
// Include only from .cu files (no torch here).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernel_launch.cuh"
#include "launch.h"

namespace sparseopt {
namespace cuda {

constexpr int kBlockSize = 512;
constexpr int64_t kChunkSize = 65536;
constexpr int kILP = 4;
constexpr int kMaxBlocks = 320;

// Sized so that TensorListMeta stays below the classic 4 KB kernel-parameter limit.
constexpr int max_tensors_for_depth(int depth) {
  return depth <= 1 ? 96 : depth == 2 ? 64 : depth == 3 ? 48 : depth == 4 ? 36 : depth == 5 ? 30 : 24;
}

template <int kDepth>
struct TensorListMeta {
  static constexpr int kMaxTensors = max_tensors_for_depth(kDepth);
  void* addresses[kDepth][kMaxTensors];
  int64_t numel[kMaxTensors];
  float* steps[kMaxTensors];
  unsigned char block_to_tensor[kMaxBlocks];
  int block_to_chunk[kMaxBlocks];
};

// Storage <-> math type, with round-to-nearest-even like c10::Half/c10::BFloat16 on the CPU.
template <typename S> struct OpMath { using type = S; };
template <> struct OpMath<__half> { using type = float; };
template <> struct OpMath<__nv_bfloat16> { using type = float; };

__device__ __forceinline__ float to_math(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_math(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_math(float x) { return x; }
__device__ __forceinline__ double to_math(double x) { return x; }

template <typename S> __device__ __forceinline__ S from_math(typename OpMath<S>::type x);
template <> __device__ __forceinline__ __half from_math<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_math<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ float from_math<float>(float x) { return x; }
template <> __device__ __forceinline__ double from_math<double>(double x) { return x; }

// to_math as a function object, for rule helpers that read storage themselves
// (rules::hutchinson_row_mean).
struct ToMath {
  template <typename S>
  __device__ __forceinline__ typename OpMath<S>::type operator()(S x) const {
    return to_math(x);
  }
};

template <typename S>
struct alignas(sizeof(S) * kILP) Vec {
  S val[kILP];
};

template <typename S, class Op>
__global__ void __launch_bounds__(kBlockSize)
    elementwise_kernel(TensorListMeta<Op::kDepth> meta, Op op, const float* grad_scale,
                       const float* found_inf, const double* lr) {
  constexpr int D = Op::kDepth;
  using T = typename OpMath<S>::type;
  if (found_inf != nullptr && *found_inf != 0.f) return;
  if (lr != nullptr) op.lr = *lr;  // a tensor lr: read at run time (a CUDA graph replays it)

  const int tensor = meta.block_to_tensor[blockIdx.x];
  const int64_t chunk_start = int64_t(meta.block_to_chunk[blockIdx.x]) * kChunkSize;
  const int64_t remaining = meta.numel[tensor] - chunk_start;
  const int64_t n = remaining < kChunkSize ? remaining : kChunkSize;

  S* p[D];
  bool aligned = true;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    p[d] = static_cast<S*>(meta.addresses[d][tensor]) + chunk_start;
    aligned = aligned && (reinterpret_cast<uintptr_t>(p[d]) % sizeof(Vec<S>) == 0);
  }
  const auto c = op.template coeffs<T>(Op::kUsesStep ? double(*meta.steps[tensor]) : 0.0);
  const bool scaled = grad_scale != nullptr;
  const T inv_scale = scaled ? T(1.0 / double(*grad_scale)) : T(1);

  auto apply = [&](T(&v)[D], S& grad_out) {
    if (scaled) {
      v[Op::kGrad] = v[Op::kGrad] * inv_scale;
      grad_out = from_math<S>(v[Op::kGrad]);
    }
    op(v, c);
  };

  int64_t vec_end = 0;
  if (aligned) {
    vec_end = n - n % kILP;
    for (int64_t i = int64_t(threadIdx.x) * kILP; i < vec_end; i += int64_t(blockDim.x) * kILP) {
      Vec<S> in[D];
#pragma unroll
      for (int d = 0; d < D; ++d) in[d] = *reinterpret_cast<const Vec<S>*>(p[d] + i);
      Vec<S> grad_out = in[Op::kGrad];
#pragma unroll
      for (int k = 0; k < kILP; ++k) {
        T v[D];
#pragma unroll
        for (int d = 0; d < D; ++d) v[d] = to_math(in[d].val[k]);
        apply(v, grad_out.val[k]);
#pragma unroll
        for (int d = 0; d < D; ++d)
          if ((Op::kWrites >> d) & 1u) in[d].val[k] = from_math<S>(v[d]);
      }
#pragma unroll
      for (int d = 0; d < D; ++d)
        if ((Op::kWrites >> d) & 1u) *reinterpret_cast<Vec<S>*>(p[d] + i) = in[d];
      if (scaled) *reinterpret_cast<Vec<S>*>(p[Op::kGrad] + i) = grad_out;
    }
  }
  for (int64_t i = vec_end + threadIdx.x; i < n; i += blockDim.x) {
    T v[D];
#pragma unroll
    for (int d = 0; d < D; ++d) v[d] = to_math(p[d][i]);
    S grad_out = p[Op::kGrad][i];
    apply(v, grad_out);
#pragma unroll
    for (int d = 0; d < D; ++d)
      if ((Op::kWrites >> d) & 1u) p[d][i] = from_math<S>(v[d]);
    if (scaled) p[Op::kGrad][i] = grad_out;
  }
}

template <typename S, class Op>
void launch_typed(const TensorListsArgs& a, const Op& op) {
  constexpr int D = Op::kDepth;
  using Meta = TensorListMeta<D>;
  static_assert(sizeof(Meta) + sizeof(Op) + 3 * sizeof(void*) <= 4000,
                "kernel parameters exceed the 4 KB limit");
  if (a.depth != D) throw std::runtime_error("sparseopt: launch_elementwise depth mismatch");
  const cudaStream_t stream = static_cast<cudaStream_t>(a.stream);

  int64_t last = -1;  // the last non-empty tensor ends the final launch
  for (int64_t i = 0; i < a.num_tensors; ++i)
    if (a.numels[i] > 0) last = i;
  if (last < 0) return;

  Meta meta;
  int loc_tensor = 0;
  int loc_block = 0;
  for (int64_t i = 0; i <= last; ++i) {
    const int64_t n = a.numels[i];
    if (n == 0) continue;
    for (int d = 0; d < D; ++d) meta.addresses[d][loc_tensor] = a.ptrs[d * a.num_tensors + i];
    meta.numel[loc_tensor] = n;
    meta.steps[loc_tensor] = a.steps != nullptr ? a.steps[i] : nullptr;
    ++loc_tensor;
    const int64_t chunks = (n + kChunkSize - 1) / kChunkSize;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      meta.block_to_tensor[loc_block] = static_cast<unsigned char>(loc_tensor - 1);
      meta.block_to_chunk[loc_block] = static_cast<int>(chunk);
      ++loc_block;
      const bool tensor_done = chunk == chunks - 1;
      const bool table_full = loc_tensor == Meta::kMaxTensors && tensor_done;
      if (table_full || loc_block == kMaxBlocks || (i == last && tensor_done)) {
        SPARSEOPT_LAUNCH(loc_block, kBlockSize, 0, stream, elementwise_kernel<S, Op>)(
            meta, op, a.grad_scale, a.found_inf, a.lr);
        check_launch("elementwise_kernel");
        loc_block = 0;
        if (tensor_done) {
          loc_tensor = 0;
        } else {  // the tensor goes on in the next launch: it becomes entry 0 there
          for (int d = 0; d < D; ++d) meta.addresses[d][0] = meta.addresses[d][loc_tensor - 1];
          meta.numel[0] = meta.numel[loc_tensor - 1];
          meta.steps[0] = meta.steps[loc_tensor - 1];
          loc_tensor = 1;
        }
      }
    }
  }
}

template <class Op>
void launch_elementwise(const TensorListsArgs& a, const Op& op) {
  switch (a.dtype) {
    case ScalarType::Float: return launch_typed<float>(a, op);
    case ScalarType::Double: return launch_typed<double>(a, op);
    case ScalarType::Half: return launch_typed<__half>(a, op);
    case ScalarType::BFloat16: return launch_typed<__nv_bfloat16>(a, op);
  }
  throw std::runtime_error("sparseopt: unsupported dtype in launch_elementwise");
}

// Instantiates launch_elementwise for one Op type (used by the per-rule .cu files).
#define SPARSEOPT_INSTANTIATE_ELEMENTWISE(...) \
  template void launch_elementwise<__VA_ARGS__>(const TensorListsArgs&, const __VA_ARGS__&);

}  // namespace cuda
}  // namespace sparseopt

// run_elementwise<Op>: the one driver every element-wise optimizer op goes through.
//
//   validate every tensor (before anything is written)
//   -> skip everything if GradScaler's found_inf is set
//   -> bump the step counters (host for CPU, a tiny kernel for CUDA: no synchronisation)
//   -> run the rule over all tensors in one parallel pass (CPU) or one multi-tensor launch per
//      dtype (CUDA)
//   -> copy back the few tensors that needed a contiguous copy.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>

#include <array>
#include <optional>
#include <vector>

#include "../cpu/elementwise_cpu.h"
#include "cuda_device.h"
#include "tensor_lists.h"

#ifdef SPARSEOPT_WITH_CUDA
#include "../cuda/launch.h"
#endif

namespace sparseopt {

#ifdef SPARSEOPT_WITH_CUDA
inline cuda::ScalarType to_cuda_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::ScalarType::Float;
    case at::kDouble: return cuda::ScalarType::Double;
    case at::kHalf: return cuda::ScalarType::Half;
    case at::kBFloat16: return cuda::ScalarType::BFloat16;
    default: TORCH_CHECK(false, "sparseopt: unsupported dtype ", t);
  }
}

template <class Op>
void run_elementwise_cuda(const DenseViews<Op::kDepth>& work, at::TensorList steps,
                          const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf, const Op& op,
                          const at::Tensor& device_lr) {
  constexpr int D = Op::kDepth;
  const auto& params = work[0];
  void* stream = cuda_stream_of(params[0].device());
  const float* scale_ptr = grad_scale ? grad_scale->data_ptr<float>() : nullptr;
  const float* inf_ptr = found_inf ? found_inf->data_ptr<float>() : nullptr;

  std::vector<float*> step_ptrs;
  if (Op::kUsesStep) {
    for (const auto& s : steps) step_ptrs.push_back(s.data_ptr<float>());
    cuda::increment_steps(step_ptrs.data(), static_cast<int64_t>(step_ptrs.size()), inf_ptr,
                          stream);
  }
  // One launch per dtype present (a launch handles one element type).
  for (const at::ScalarType dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    std::vector<size_t> idx;
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].scalar_type() == dtype) idx.push_back(i);
    if (idx.empty()) continue;
    const int64_t m = static_cast<int64_t>(idx.size());
    std::vector<void*> ptrs(D * m);
    std::vector<int64_t> numels(m);
    std::vector<float*> tensor_steps(Op::kUsesStep ? m : 0);
    for (int64_t k = 0; k < m; ++k) {
      for (int d = 0; d < D; ++d) ptrs[d * m + k] = work[d][idx[k]].data_ptr();
      numels[k] = params[idx[k]].numel();
      if (Op::kUsesStep) tensor_steps[k] = step_ptrs[idx[k]];
    }
    cuda::TensorListsArgs args;
    args.depth = D;
    args.num_tensors = m;
    args.ptrs = ptrs.data();
    args.numels = numels.data();
    args.steps = Op::kUsesStep ? tensor_steps.data() : nullptr;
    args.dtype = to_cuda_dtype(dtype);
    args.grad_scale = scale_ptr;
    args.found_inf = inf_ptr;
    args.lr = device_lr.defined() ? device_lr.data_ptr<double>() : nullptr;
    args.stream = stream;
    cuda::launch_elementwise(args, op);
  }
}
#endif

template <class Op>
void run_elementwise_cpu(const DenseViews<Op::kDepth>& work, at::TensorList steps,
                         const std::optional<at::Tensor>& grad_scale,
                         const std::optional<at::Tensor>& found_inf, const Op& op) {
  constexpr int D = Op::kDepth;
  if (found_inf && *found_inf->data_ptr<float>() != 0.f) return;
  const auto& params = work[0];
  const size_t n = params.size();
  std::vector<double> t(Op::kUsesStep ? n : 0);
  if (Op::kUsesStep) {
    for (size_t i = 0; i < n; ++i) {
      float* s = steps[i].data_ptr<float>();
      *s += 1.f;
      t[i] = *s;
    }
  }
  std::vector<std::array<void*, D>> ptrs(n);
  std::vector<int64_t> numels(n);
  std::vector<at::ScalarType> dtypes(n);
  for (size_t i = 0; i < n; ++i) {
    for (int d = 0; d < D; ++d) ptrs[i][d] = work[d][i].data_ptr();
    numels[i] = params[i].numel();
    dtypes[i] = params[i].scalar_type();
  }
  std::optional<double> inv_scale;
  if (grad_scale) inv_scale = 1.0 / static_cast<double>(*grad_scale->data_ptr<float>());
  cpu::elementwise_loop(ptrs, numels, dtypes, t, inv_scale, op);
}

// lists[0] are the parameters, lists[Op::kGrad] the gradients; `steps` is used iff
// Op::kUsesStep. names label the lists in error messages. `device_lr` (Lr::device), when
// defined, is the lr on the parameters' device that the kernel reads in place of op.lr.
template <class Op>
void run_elementwise(const char* op_name, const std::array<NamedList, Op::kDepth>& named,
                     at::TensorList steps, const std::optional<at::Tensor>& grad_scale,
                     const std::optional<at::Tensor>& found_inf, const Op& op,
                     const at::Tensor& device_lr = at::Tensor()) {
  constexpr int D = Op::kDepth;
  check_tensor_lists(op_name, std::vector<NamedList>(named.begin(), named.end()),
                     Op::kUsesStep ? std::optional<at::TensorList>(steps) : std::nullopt,
                     grad_scale, found_inf);
  if (named[0].tensors.empty()) return;
  std::array<at::TensorList, D> lists;
  for (int d = 0; d < D; ++d) lists[d] = named[d].tensors;
  DenseViews<D> work(lists, Op::kWrites);
  if (grad_scale) work.also_written(Op::kGrad, lists[Op::kGrad]);

  const at::Device device = lists[0][0].device();
  TORCH_CHECK(!device_lr.defined() || device_lr.device() == device, op_name, ": lr is on ",
              device_lr.defined() ? device_lr.device() : device, " but the parameters are on ",
              device, "; accepted: a float, or a tensor on the parameters' device or the CPU");
  const c10::DeviceGuard guard(device);
  if (runs_cuda_kernels(device)) {
#ifdef SPARSEOPT_WITH_CUDA
    run_elementwise_cuda(work, steps, grad_scale, found_inf, op, device_lr);
#endif
  } else if (device.is_cpu()) {
    run_elementwise_cpu(work, steps, grad_scale, found_inf, op);
  } else if (device.is_cuda()) {
    TORCH_CHECK(false, op_name, ": this build of sparseopt has no CUDA kernels");
  } else {
    TORCH_CHECK(false, op_name, ": no native kernel for device ", device);
  }
  work.finish();
  for (int d = 0; d < D; ++d) {
    if (((Op::kWrites >> d) & 1u) || (d == Op::kGrad && grad_scale)) bump_versions(lists[d]);
  }
  if (Op::kUsesStep) bump_versions(steps);
}

}  // namespace sparseopt

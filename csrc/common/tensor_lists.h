// Validation and memory views shared by every multi-tensor op (CPU and CUDA alike).
//
// Everything an op checks is checked here, before any tensor is written, so a rejected call
// leaves parameters, gradients and state exactly as they were.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace sparseopt {

struct NamedList {
  const char* name;
  at::TensorList tensors;
};

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Checks one scalar tensor argument (a step counter, GradScaler's scale or found_inf).
inline void check_scalar_tensor(const char* op, const std::string& what, const at::Tensor& t,
                                const at::Device& device) {
  TORCH_CHECK(t.defined(), op, ": ", what, " is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", what, " must be a dense tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", what,
              " must be a float32 tensor with one element, got dtype ", t.scalar_type());
  TORCH_CHECK(t.numel() == 1, op, ": ", what, " must have exactly one element, got ", t.numel());
  TORCH_CHECK(t.device() == device, op, ": ", what, " is on ", t.device(),
              " but the parameters are on ", device, "; it must be on the parameters' device");
}

// lists[0] are the parameters; every other list must match them tensor for tensor.
inline void check_tensor_lists(const char* op, const std::vector<NamedList>& lists,
                               const std::optional<at::TensorList>& steps,
                               const std::optional<at::Tensor>& grad_scale,
                               const std::optional<at::Tensor>& found_inf) {
  const at::TensorList params = lists.at(0).tensors;
  const size_t n = params.size();
  for (const auto& list : lists) {
    TORCH_CHECK(list.tensors.size() == n, op, ": ", list.name, " has ", list.tensors.size(),
                " tensors but ", lists[0].name, " has ", n, "; the lists must match one to one");
  }
  if (steps.has_value()) {
    TORCH_CHECK(steps->size() == n, op, ": steps has ", steps->size(), " tensors but ",
                lists[0].name, " has ", n);
  }
  if (n == 0) return;
  TORCH_CHECK(params[0].defined(), op, ": ", lists[0].name, "[0] is undefined");
  const at::Device device = params[0].device();
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    for (const auto& list : lists) {
      const at::Tensor& t = list.tensors[i];
      TORCH_CHECK(t.defined(), op, ": ", list.name, "[", i, "] is undefined");
      TORCH_CHECK(t.layout() == at::kStrided, op, ": ", list.name, "[", i, "] has layout ",
                  t.layout(), "; only dense (strided) tensors are supported, so sparse "
                  "gradients are not");
      TORCH_CHECK(!t.is_complex(), op, ": ", list.name, "[", i, "] is complex (", t.scalar_type(),
                  "); supported dtypes are float32, float64, float16 and bfloat16");
      TORCH_CHECK(is_supported_float(t.scalar_type()), op, ": ", list.name, "[", i,
                  "] has dtype ", t.scalar_type(),
                  "; supported dtypes are float32, float64, float16 and bfloat16");
      TORCH_CHECK(t.device() == device, op, ": ", list.name, "[", i, "] is on ", t.device(),
                  " but ", lists[0].name, "[0] is on ", device,
                  "; all tensors of one call must be on one device");
      TORCH_CHECK(t.scalar_type() == p.scalar_type(), op, ": ", list.name, "[", i,
                  "] has dtype ", t.scalar_type(), " but ", lists[0].name, "[", i, "] has ",
                  p.scalar_type(), "; gradients and state must have their parameter's dtype");
      TORCH_CHECK(t.sizes() == p.sizes(), op, ": ", list.name, "[", i, "] has shape ", t.sizes(),
                  " but ", lists[0].name, "[", i, "] has shape ", p.sizes());
    }
    if (steps.has_value()) {
      check_scalar_tensor(op, "steps[" + std::to_string(i) + "]", (*steps)[i], device);
    }
  }
  if (grad_scale.has_value()) check_scalar_tensor(op, "grad_scale", *grad_scale, device);
  if (found_inf.has_value()) check_scalar_tensor(op, "found_inf", *found_inf, device);
}

// The kernels write through raw pointers, which autograd does not see: bump each written
// tensor's version counter as an in-place torch op would, so that a graph that saved a parameter
// before the step refuses to backward through it ("modified by an inplace operation") and
// caches keyed on `_version` (compressed sparse layers) notice the new values.
inline void bump_versions(at::TensorList tensors) {
  for (const at::Tensor& t : tensors) {
    // Inference tensors carry no version counter (and cannot be updated outside inference mode).
    if (t.defined() && !t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
  }
}

// The element-wise kernels walk raw memory. Tensor i of every list can be used in place when all
// of them are non-overlapping and dense with one stride pattern (contiguous, channels_last, a
// transposed weight, ...): element k of one is element k of the others. Otherwise (a strided
// view with gaps, mismatched strides) the kernel runs on contiguous copies and written slots are
// copied back afterwards; a rare case, and the only one that allocates during a step.
template <int kDepth>
class DenseViews {
 public:
  DenseViews(const std::array<at::TensorList, kDepth>& lists, unsigned writes) {
    const size_t n = lists[0].size();
    for (int d = 0; d < kDepth; ++d) work_[d].reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor& p = lists[0][i];
      bool shared = p.is_non_overlapping_and_dense();
      for (int d = 1; d < kDepth && shared; ++d) shared = lists[d][i].strides() == p.strides();
      for (int d = 0; d < kDepth; ++d) {
        const at::Tensor& t = lists[d][i];
        if (shared || t.is_contiguous()) {
          work_[d].push_back(t);
        } else {
          work_[d].push_back(t.contiguous());
          if ((writes >> d) & 1u) copy_back_.push_back({t, work_[d].back()});
        }
      }
    }
  }
  const std::vector<at::Tensor>& operator[](int d) const { return work_[d]; }
  // Marks slot d of tensor i as written (for the gradient slot, written only when unscaling).
  void also_written(int d, at::TensorList originals) {
    for (size_t i = 0; i < originals.size(); ++i)
      if (!work_[d][i].is_same(originals[i])) copy_back_.push_back({originals[i], work_[d][i]});
  }
  void finish() {
    for (auto& pair : copy_back_) pair.first.copy_(pair.second);
  }

 private:
  std::array<std::vector<at::Tensor>, kDepth> work_;
  std::vector<std::pair<at::Tensor, at::Tensor>> copy_back_;
};

}  // namespace sparseopt

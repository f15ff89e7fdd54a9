// The boundary between the torch side (csrc/common/elementwise.h) and the CUDA kernels.
//
// Neither torch nor the CUDA headers are included here: the .cu files see raw pointers and sizes
// only, which keeps `nvcc -c` of every kernel a matter of seconds and independent of a CUDA
// build of torch. The torch side fills TensorListsArgs and calls launch_elementwise<Op>, which
// the .cu files instantiate for every Op in csrc/rules/.
#pragma once

#include <cstdint>

namespace sparseopt {
namespace cuda {

enum class ScalarType : int { Float = 0, Double = 1, Half = 2, BFloat16 = 3 };

struct TensorListsArgs {
  int depth = 0;               // number of tensor lists (slots); must equal Op::kDepth
  int64_t num_tensors = 0;     // tensors per list
  void* const* ptrs = nullptr; // ptrs[slot * num_tensors + i]: data of tensor i of list `slot`
  const int64_t* numels = nullptr;
  float* const* steps = nullptr;       // per-tensor step counters on the device (Op::kUsesStep)
  ScalarType dtype = ScalarType::Float;  // every tensor of one launch has this dtype
  const float* grad_scale = nullptr;   // GradScaler's scale on the device, or nullptr
  const float* found_inf = nullptr;    // nonzero: skip the whole step, or nullptr
  const double* lr = nullptr;          // the lr on the device, read in place of Op::lr, or nullptr
  void* stream = nullptr;              // cudaStream_t
};

// One fused multi-tensor launch (or a few, when the tensor table overflows a launch's parameter
// space) of Op over all tensors. Throws std::runtime_error on a CUDA launch error.
template <class Op>
void launch_elementwise(const TensorListsArgs& args, const Op& op);

// steps[i] += 1 for every i, on the device, unless *found_inf != 0 (no host synchronisation).
void increment_steps(float* const* steps, int64_t n, const float* found_inf, void* stream);

}  // namespace cuda
}  // namespace sparseopt

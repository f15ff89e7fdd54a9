// Device-side step counters: steps[i] += 1 unless GradScaler found an inf/NaN.
// A separate launch, before the rule's kernel, so every block of that kernel reads the same,
// already incremented t (one kernel cannot both read and bump a counter without a race).
#include <cuda_runtime.h>

#include "multi_tensor_apply.cuh"

namespace sparseopt {
namespace cuda {
namespace {

constexpr int kStepsPerLaunch = 448;  // 3.5 KB of pointers: inside the 4 KB parameter limit

struct StepTable {
  float* steps[kStepsPerLaunch];
};

__global__ void increment_steps_kernel(StepTable table, int n, const float* found_inf) {
  if (found_inf != nullptr && *found_inf != 0.f) return;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) *table.steps[i] += 1.f;
}

}  // namespace

void increment_steps(float* const* steps, int64_t n, const float* found_inf, void* stream) {
  for (int64_t begin = 0; begin < n; begin += kStepsPerLaunch) {
    const int count = static_cast<int>(n - begin < kStepsPerLaunch ? n - begin : kStepsPerLaunch);
    StepTable table;
    for (int k = 0; k < count; ++k) table.steps[k] = steps[begin + k];
    SPARSEOPT_LAUNCH(1, kStepsPerLaunch, 0, static_cast<cudaStream_t>(stream),
                     increment_steps_kernel)(table, count, found_inf);
    check_launch("increment_steps_kernel");
  }
}

}  // namespace cuda
}  // namespace sparseopt

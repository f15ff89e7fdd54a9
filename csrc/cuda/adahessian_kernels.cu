// CUDA side of AdaHessian: the element-wise update on the multi-tensor kernel, and the
// Hutchinson pass (one thread per row of spatial taps).
#include "../rules/adahessian.h"
#include "hutchinson_launch.h"
#include "multi_tensor_apply.cuh"

namespace sparseopt {
namespace cuda {

SPARSEOPT_INSTANTIATE_ELEMENTWISE(rules::AdaHessianOp<rules::HessianPower::kOne>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(rules::AdaHessianOp<rules::HessianPower::kHalf>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(rules::AdaHessianOp<rules::HessianPower::kOther>)

template <typename S>
__global__ void hutchinson_rows_kernel(const S* z, const S* hz, S* diag, int64_t rows,
                                       int64_t row_len, double weight, bool accumulate) {
  using T = typename OpMath<S>::type;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = r * row_len;
    const T mean = rules::hutchinson_row_mean<T>(z + base, hz + base, row_len, ToMath());
    const T w = T(weight);
    for (int64_t k = 0; k < row_len; ++k) {
      const T prev = accumulate ? to_math(diag[base + k]) : T(0);
      diag[base + k] = from_math<S>(prev + w * mean);
    }
  }
}

template <typename S>
void launch_rows(const void* z, const void* hz, void* diag, int64_t rows, int64_t row_len,
                 double weight, bool accumulate, cudaStream_t stream) {
  const int threads = 256;
  const int64_t want = (rows + threads - 1) / threads;
  const int blocks = static_cast<int>(want < 4096 ? want : 4096);
  SPARSEOPT_LAUNCH(blocks, threads, 0, stream, hutchinson_rows_kernel<S>)(
      static_cast<const S*>(z), static_cast<const S*>(hz), static_cast<S*>(diag), rows, row_len,
      weight, accumulate);
  check_launch("hutchinson_rows_kernel");
}

void launch_hutchinson_rows(ScalarType dtype, const void* z, const void* hz, void* diag,
                            int64_t rows, int64_t row_len, double weight, bool accumulate,
                            void* stream) {
  if (rows == 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case ScalarType::Float: return launch_rows<float>(z, hz, diag, rows, row_len, weight, accumulate, s);
    case ScalarType::Double: return launch_rows<double>(z, hz, diag, rows, row_len, weight, accumulate, s);
    case ScalarType::Half: return launch_rows<__half>(z, hz, diag, rows, row_len, weight, accumulate, s);
    case ScalarType::BFloat16:
      return launch_rows<__nv_bfloat16>(z, hz, diag, rows, row_len, weight, accumulate, s);
  }
  throw std::runtime_error("sparseopt: unsupported dtype in launch_hutchinson_rows");
}

}  // namespace cuda
}  // namespace sparseopt

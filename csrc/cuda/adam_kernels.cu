// CUDA instantiations of Adam/AdamW (csrc/rules/adam.h) on the multi-tensor kernel.
#include "../rules/adam.h"
#include "multi_tensor_apply.cuh"

namespace sparseopt {
namespace cuda {

using rules::AdamOp;
using WD = rules::WeightDecay;

// <amsgrad, weight decay mode>
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kNone>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kL2>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kDecoupled>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kNone>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kL2>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kDecoupled>)

}  // namespace cuda
}  // namespace sparseopt

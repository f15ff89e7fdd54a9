// CUDA instantiations of Adam/AdamW (csrc/rules/adam.h) on the multi-tensor kernel.
#include "../rules/adam.h"
#include "multi_tensor_apply.cuh"

namespace sparseopt {
namespace cuda {

using rules::AdamOp;
using WD = rules::WeightDecay;

// <amsgrad, weight decay mode, lerp from m (beta1 > 0.5)>
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kNone, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kL2, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kDecoupled, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kNone, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kL2, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kDecoupled, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kNone, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kL2, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<false, WD::kDecoupled, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kNone, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kL2, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(AdamOp<true, WD::kDecoupled, false>)

}  // namespace cuda
}  // namespace sparseopt

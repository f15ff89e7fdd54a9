// CUDA instantiations of the l1 family (Prox-SGD, sqrt(t)-Prox-SGD, RDA/iRDA).
// The formulas live in csrc/rules/; the kernel template in multi_tensor_apply.cuh.
#include "../rules/prox_sgd.h"
#include "../rules/rda.h"
#include "multi_tensor_apply.cuh"

namespace sparseopt {
namespace cuda {

using rules::ProxSgdOp;
using rules::RdaOp;

// <momentum, weight_decay, sqrt_t>
SPARSEOPT_INSTANTIATE_ELEMENTWISE(ProxSgdOp<false, false, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(ProxSgdOp<false, true, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(ProxSgdOp<true, false, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(ProxSgdOp<true, true, false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(ProxSgdOp<false, false, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(ProxSgdOp<false, true, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(ProxSgdOp<true, false, true>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(ProxSgdOp<true, true, true>)
// <center (w0 != 0)>
SPARSEOPT_INSTANTIATE_ELEMENTWISE(RdaOp<false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(RdaOp<true>)

}  // namespace cuda
}  // namespace sparseopt

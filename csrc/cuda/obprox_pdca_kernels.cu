// CUDA instantiations of OBProx-SG (both phases: one Op, the phase is chosen per tensor from its
// step counter) and pDCA_e. The formulas live in csrc/rules/obproxsg.h and csrc/rules/pdca.h;
// the kernel template in multi_tensor_apply.cuh.
#include "../rules/obproxsg.h"
#include "../rules/pdca.h"
#include "multi_tensor_apply.cuh"

namespace sparseopt {
namespace cuda {

using rules::ObProxSgOp;
using rules::PdcaOp;

SPARSEOPT_INSTANTIATE_ELEMENTWISE(ObProxSgOp)
// <weight_decay != 0>
SPARSEOPT_INSTANTIATE_ELEMENTWISE(PdcaOp<false>)
SPARSEOPT_INSTANTIATE_ELEMENTWISE(PdcaOp<true>)

}  // namespace cuda
}  // namespace sparseopt

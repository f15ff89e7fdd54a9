"""Pure-PyTorch reference implementations of every sparseopt update rule and sparse layer op.

Each function has the signature and semantics of the native op of the same name in
``torch.ops.sparseopt``. They are the test oracle (native kernels must match them, the
optimizer rules bit for bit) and the fallback wherever no native kernel exists (no compiled
extension, or a device without one). The formulas are in docs/algorithms.md, one numbered
section per rule (section 0 for what they share).
"""

from . import sparse_conv
from .adahessian import adahessian_step_, hutchinson_diag_
from .adam import adam_step_
from .l1 import prox_sgd_step_, rda_step_, sqrt_t_prox_sgd_step_
from .obprox_pdca import obproxsg_step_, pdca_step_
from .sparse_conv import (csr_pointwise_conv2d, csr_pointwise_conv2d_fused, sparse_depthwise_conv2d,
                          sparse_depthwise_conv2d_fused)

__all__ = [
    "prox_sgd_step_",
    "sqrt_t_prox_sgd_step_",
    "rda_step_",
    "adam_step_",
    "hutchinson_diag_",
    "adahessian_step_",
    "obproxsg_step_",
    "pdca_step_",
    "sparse_conv",
    "csr_pointwise_conv2d",
    "sparse_depthwise_conv2d",
    "csr_pointwise_conv2d_fused",
    "sparse_depthwise_conv2d_fused",
]

"""sparseopt: fused l1/sparsity optimizers and sparse layers for PyTorch.

Swap ``torch.optim.SGD`` for :class:`sparseopt.IRDA` (or :class:`ProxSGD`, ...) and train a
model whose weights are mostly exact zeros. Every update rule runs as one fused multi-tensor
kernel on CPU and CUDA, with a pure-PyTorch reference as fallback (:mod:`sparseopt.reference`).
"""

from . import init, models, nn, ops, reference
from ._version import __version__
from .optim import IRDA, RDA, AdaHessian, Adam, AdamW, ProxSGD, SparseOptimizer, SqrtTProxSGD
from .optim import PDCA, OBProxSG, OBProxSGPlus
from .sparsity import SparsityReport, sparsity, sparsity_report

backend_info = ops.backend_info

__all__ = [
    "__version__",
    "ProxSGD",
    "SqrtTProxSGD",
    "RDA",
    "IRDA",
    "Adam",
    "AdamW",
    "AdaHessian",
    "OBProxSG",
    "OBProxSGPlus",
    "PDCA",
    "SparseOptimizer",
    "sparsity",
    "sparsity_report",
    "SparsityReport",
    "backend_info",
    "init",
    "ops",
    "reference",
    "nn",
    "models",
]

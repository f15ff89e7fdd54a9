"""sparseopt's optimizers: drop-in :class:`torch.optim.Optimizer` subclasses."""

from ._base import SparseOptimizer
from .obproxsg import OBProxSG, OBProxSGPlus
from .pdca import PDCA
from .prox_sgd import ProxSGD, SqrtTProxSGD
from .rda import IRDA, RDA

__all__ = [
    "SparseOptimizer", "ProxSGD", "SqrtTProxSGD", "RDA", "IRDA",
    "OBProxSG", "OBProxSGPlus", "PDCA",
]  # fmt: skip

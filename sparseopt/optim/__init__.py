"""sparseopt's optimizers: drop-in :class:`torch.optim.Optimizer` subclasses."""

from ._base import SparseOptimizer
from .adahessian import AdaHessian
from .adam import Adam, AdamW
from .obproxsg import OBProxSG, OBProxSGPlus
from .pdca import PDCA
from .prox_sgd import ProxSGD, SqrtTProxSGD
from .rda import IRDA, RDA

__all__ = ["SparseOptimizer", "Adam", "AdamW", "AdaHessian", "ProxSGD", "SqrtTProxSGD", "RDA", "IRDA"]
__all__ += ["OBProxSG", "OBProxSGPlus", "PDCA"]

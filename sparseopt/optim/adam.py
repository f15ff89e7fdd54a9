"""Adam and AdamW as one fused multi-tensor kernel per parameter group, drop-in for torch's
(docs/algorithms.md section 8)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import Bucket, Params, SparseOptimizer, lr_arg, new_step


class Adam(SparseOptimizer):
    r"""Adam (Kingma & Ba) with torch.optim.Adam's signature, defaults and state layout.

    Results follow ``torch.optim.Adam`` to rounding (the kernel performs torch's operations in
    torch's order; fp32 elements differ by at most about 2e-6 relative, where the compiler's
    vectorised division and square root round differently), and the state dicts are
    interchangeable: a torch Adam state loads into this class and back.

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,
        \quad w \leftarrow w - \frac{\mathrm{lr}}{1-\beta_1^t}\,
        \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}

    With ``l1 > 0`` the step is followed by the l1 prox ``w <- soft(w, lr * l1)`` on the
    parameters ``l1_on`` selects, which gives exact zeros (the prox of Adam's step is an
    approximation of l1-regularised Adam, not a method from a paper).

    Args:
        params: parameters or parameter groups.
        lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay: as in
            :class:`torch.optim.Adam` (``lr`` a float or a one-element tensor).
        foreach, fused: accepted for compatibility; sparseopt always runs its fused kernel, which
            keeps step counters on the parameters' device and never synchronises with the host.
        differentiable: must be False (not supported).
        l1: optional l1 weight for the prox after each step (>= 0, default 0).
        l1_on: ``"weights"`` (dim > 1, default) or ``"all"``.
        backend: ``"auto"``, ``"native"`` or ``"reference"``.
        capturable, check_finite: CUDA-graph capture checks; raise on inf/NaN gradients
            (see :class:`~sparseopt.optim.SparseOptimizer`).
    """

    op_name = "adam_step_"
    _optional_state = ("max_exp_avg_sq",)  # created when amsgrad is switched on later
    _decoupled_default = False

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool | None = None,
        l1: float = 0.0,
        l1_on: str = "weights",
        backend: str = "auto",
        check_finite: bool = False,
    ) -> None:
        if decoupled_weight_decay is None:
            decoupled_weight_decay = self._decoupled_default
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay, l1=l1, l1_on=l1_on, backend=backend,
            check_finite=check_finite,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        owner = self._owner
        super()._check_hyperparameters(group)
        for flag in ("amsgrad", "maximize", "decoupled_weight_decay"):
            if not isinstance(group[flag], bool):
                raise ValueError(f"{owner}: {flag} must be a bool, got {group[flag]!r}")
        if group["differentiable"]:
            raise ValueError(f"{owner}: differentiable=True is not supported; accepted: False")

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step(param)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def _op_args(self, group: dict[str, Any], b: Bucket) -> list[Any]:
        amsgrad = group["amsgrad"]
        if amsgrad:
            for p, s in zip(b.params, b.states):
                if "max_exp_avg_sq" not in s:  # amsgrad switched on after the first steps
                    s["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        return [
            [s["exp_avg"] for s in b.states],
            [s["exp_avg_sq"] for s in b.states],
            [s["max_exp_avg_sq"] for s in b.states] if amsgrad else [],
            [s["step"] for s in b.states],
            lr_arg(group["lr"]),
            float(beta1),
            float(beta2),
            float(group["eps"]),
            float(group["weight_decay"]),
            amsgrad,
            group["maximize"],
            group["decoupled_weight_decay"],
            float(group["l1"]) if b.covered else 0.0,
        ]


class AdamW(Adam):
    """AdamW: :class:`Adam` with decoupled weight decay ``w <- w (1 - lr wd)`` and torch's
    AdamW defaults (``weight_decay=1e-2``). Equal to ``torch.optim.AdamW(foreach=False)``."""

    _decoupled_default = True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        l1: float = 0.0,
        l1_on: str = "weights",
        backend: str = "auto",
        check_finite: bool = False,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=True, l1=l1, l1_on=l1_on, backend=backend,
            check_finite=check_finite,
        )  # fmt: skip

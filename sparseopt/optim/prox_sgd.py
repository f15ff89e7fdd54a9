"""Prox-SGD and sqrt(t)-Prox-SGD (iRDA paper eq. 17-18 and 21-22; docs/algorithms.md sections 1
and 2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import Bucket, Params, SparseOptimizer, lr_arg, new_step

class ProxSGD(SparseOptimizer):
    r"""Proximal SGD with an l1 penalty: exact zeros from the soft-threshold prox.

    Per element, with ``g`` the gradient:

    .. math::
        g \leftarrow g + \mathrm{wd}\,w,\quad m \leftarrow \mu m + g,\quad
        w \leftarrow \mathrm{soft}(w - \mathrm{lr}\,m,\ \mathrm{lr}\,\lambda)

    where ``soft(u, a) = sign(u) max(|u| - a, 0)``; without momentum ``m = g``.

    Args:
        params: parameters or parameter groups, as for any torch optimizer.
        lr: learning rate (required, >= 0; a float or a one-element tensor).
        l1: the l1 weight ``lambda`` (>= 0). 0 gives plain SGD.
        momentum: heavy-ball momentum ``mu`` in [0, 1) (state ``momentum_buffer``).
        weight_decay: l2 penalty added to the gradient (>= 0).
        l1_on: ``"weights"`` (default: parameters with ``dim > 1``, i.e. conv and linear
            weights, not biases or norm scales) or ``"all"``.
        backend: ``"auto"`` (native kernel where compiled, else the reference), ``"native"``
            (error if no native kernel) or ``"reference"`` (pure PyTorch).
        capturable, check_finite: CUDA-graph capture checks; raise on inf/NaN gradients
            (see :class:`~sparseopt.optim.SparseOptimizer`).

    Example:
        >>> opt = sparseopt.ProxSGD(model.parameters(), lr=0.1, l1=1e-4, momentum=0.9)
    """

    op_name = "prox_sgd_step_"
    _optional_state = ("momentum_buffer",)  # created when momentum is switched on later
    _required = ("lr",)
    _example = "{owner}(model.parameters(), lr=0.1, l1=1e-4)"

    def __init__(
        self,
        params: Params,
        lr: float | None = None,
        l1: float = 0.0,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        *,
        l1_on: str = "weights",
        backend: str = "auto",
        capturable: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, l1=l1, momentum=momentum, weight_decay=weight_decay, l1_on=l1_on,
            backend=backend, capturable=capturable, check_finite=check_finite,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if group["momentum"] != 0:
            state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    @staticmethod
    def _buffers(
        group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]]
    ) -> list[Tensor]:
        if group["momentum"] == 0:
            return []
        out = []
        for p, state in zip(params, states):
            buf = state.get("momentum_buffer")
            if buf is None:  # momentum switched on after the first steps
                buf = state["momentum_buffer"] = torch.zeros_like(
                    p, memory_format=torch.preserve_format
                )
            out.append(buf)
        return out

    def _op_args(self, group: dict[str, Any], b: Bucket) -> list[Any]:
        return [
            self._buffers(group, b.params, b.states),
            lr_arg(group["lr"]),
            float(group["l1"]) if b.covered else 0.0,
            float(group["momentum"]),
            float(group["weight_decay"]),
        ]


class SqrtTProxSGD(ProxSGD):
    r"""sqrt(t)-Prox-SGD: Prox-SGD whose threshold grows as ``lambda * sqrt(t) / gamma``.

    .. math::
        w \leftarrow \mathrm{soft}(w - \mathrm{lr}\,g,\ \lambda \sqrt{t} / \gamma)

    with ``t`` the step count (from 1, per parameter, state ``step``). The iRDA paper's
    threshold ``t / beta_t`` with ``beta_t = gamma sqrt(t)``. Momentum and weight decay act as in
    :class:`ProxSGD`.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (required, >= 0).
        l1: the l1 weight ``lambda`` (required, >= 0).
        gamma: ``gamma > 0`` of ``beta_t = gamma sqrt(t)`` (default 1).
        momentum, weight_decay, l1_on, backend: as in :class:`ProxSGD`.
        capturable, check_finite: CUDA-graph capture checks; raise on inf/NaN gradients
            (see :class:`~sparseopt.optim.SparseOptimizer`).
    """

    op_name = "sqrt_t_prox_sgd_step_"
    _required = ("lr", "l1")
    _example = "{owner}(model.parameters(), lr=0.1, l1=1e-6)"

    def __init__(
        self,
        params: Params,
        lr: float | None = None,
        l1: float | None = None,
        gamma: float = 1.0,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        *,
        l1_on: str = "weights",
        backend: str = "auto",
        capturable: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, l1=l1, gamma=gamma, momentum=momentum, weight_decay=weight_decay,
            l1_on=l1_on, backend=backend, capturable=capturable, check_finite=check_finite,
        )  # fmt: skip
        SparseOptimizer.__init__(self, params, defaults)

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step(param)
        super()._init_state(param, state, group)

    def _op_args(self, group: dict[str, Any], b: Bucket) -> list[Any]:
        return [
            self._buffers(group, b.params, b.states),
            [s["step"] for s in b.states],
            lr_arg(group["lr"]),
            float(group["l1"]) if b.covered else 0.0,
            float(group["gamma"]),
            float(group["momentum"]),
            float(group["weight_decay"]),
        ]

"""RDA and iRDA (iRDA paper, Algorithm 1): regularized dual averaging with an l1 penalty
(docs/algorithms.md sections 3 and 4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import Bucket, Params, SparseOptimizer, check_choice, lr_arg, new_step


class RDA(SparseOptimizer):
    r"""Regularized dual averaging (Xiao 2010) with ``h(w) = ||w - w0||^2 / 2``.

    Per element, with ``t`` the step count (from 1) and ``gbar`` the running mean of the
    gradients (state ``grad_avg``):

    .. math::
        \bar g \leftarrow \bar g + (g - \bar g)/t,\qquad s = \mathrm{lr}\sqrt{t}/\gamma,\qquad
        w \leftarrow \mathrm{soft}(w_0 - s\,\bar g,\ s\,\lambda)

    so with ``w0 = 0`` a weight is exactly zero iff ``|gbar| <= lambda``. RDA has no learning
    rate in the paper; ``lr`` (default 1) multiplies the step size ``sqrt(t)/gamma`` so that LR
    schedulers work as with any torch optimizer.

    Args:
        params: parameters or parameter groups.
        l1: the l1 weight ``lambda`` (required, >= 0).
        gamma: ``beta_t = gamma sqrt(t)`` (> 0, default 1).
        w0: ``"init"`` (default): the prox centre is each parameter's value when the optimizer
            first steps it (state ``center``); ``"zero"``: ``w0 = 0``.
        lr: step-size multiplier (>= 0, default 1).
        l1_on: ``"weights"`` (dim > 1, default) or ``"all"``.
        backend: ``"auto"``, ``"native"`` or ``"reference"``.
        capturable, check_finite: CUDA-graph capture checks; raise on inf/NaN gradients
            (see :class:`~sparseopt.optim.SparseOptimizer`).
    """

    op_name = "rda_step_"
    _required = ("l1",)
    _example = "{owner}(model.parameters(), l1=1e-4, gamma=1.0)"

    def __init__(
        self,
        params: Params,
        l1: float | None = None,
        gamma: float = 1.0,
        w0: str = "init",
        *,
        lr: float = 1.0,
        l1_on: str = "weights",
        backend: str = "auto",
        capturable: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, l1=l1, gamma=gamma, w0=w0, retrain_after=None, retraining=False,
            l1_on=l1_on, backend=backend, capturable=capturable, check_finite=check_finite,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        owner = self._owner
        super()._check_hyperparameters(group)
        check_choice(owner, "w0", group["w0"], ("init", "zero"))
        after = group["retrain_after"]
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            raise ValueError(
                f"{owner}: invalid retrain_after = {after!r}; accepted: None or an int >= 0 "
                "(the number of Step-1 steps before retraining starts)"
            )
        if not isinstance(group["retraining"], bool):
            raise ValueError(f"{owner}: retraining must be a bool, got {group['retraining']!r}")

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step(param)
        state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if group["w0"] == "init":
            state["center"] = param.detach().clone(memory_format=torch.preserve_format)

    def _op_args(self, group: dict[str, Any], b: Bucket) -> list[Any]:
        after = group["retrain_after"]
        return [
            [s["grad_avg"] for s in b.states],
            [s["center"] for s in b.states] if group["w0"] == "init" else [],
            [s["step"] for s in b.states],
            lr_arg(group["lr"]),
            float(group["l1"]) if b.covered else 0.0,
            float(group["gamma"]),
            bool(group["retraining"]),
            -1 if after is None else int(after),
        ]


class IRDA(RDA):
    r"""iRDA, the iterative RDA method of the iRDA paper (Algorithm 1).

    Step 1 is :class:`RDA` with ``w0 = 0`` started from a random ``w1`` (initialise the model
    with :func:`sparseopt.init.irda_model_`). Step 2, *iterative retraining*, masks the gradient
    where the weight is zero, so zeros stay zero and only the surviving weights keep training;
    ``t`` and the gradient average carry on from Step 1. Switch with :meth:`start_retraining`,
    or let ``retrain_after=T`` switch after ``T`` steps. The phase is saved in ``state_dict()``.

    Args:
        params: parameters or parameter groups.
        l1: the l1 weight ``lambda`` (required, >= 0); a weight is zero iff ``|gbar| <= l1``.
        gamma: ``beta_t = gamma sqrt(t)`` (> 0, default 1).
        retrain_after: number of Step-1 steps after which retraining starts (None: only when
            :meth:`start_retraining` is called).
        lr: step-size multiplier (>= 0, default 1; see :class:`RDA`).
        l1_on: ``"weights"`` (dim > 1, default) or ``"all"``.
        backend: ``"auto"``, ``"native"`` or ``"reference"``.
        capturable, check_finite: CUDA-graph capture checks; raise on inf/NaN gradients
            (see :class:`~sparseopt.optim.SparseOptimizer`).

    Example:
        >>> sparseopt.init.irda_model_(model, s=4.0)
        >>> opt = sparseopt.IRDA(model.parameters(), l1=1e-4, gamma=1.0, retrain_after=5000)
    """

    def __init__(
        self,
        params: Params,
        l1: float | None = None,
        gamma: float = 1.0,
        retrain_after: int | None = None,
        *,
        lr: float = 1.0,
        l1_on: str = "weights",
        backend: str = "auto",
        capturable: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, l1=l1, gamma=gamma, w0="zero", retrain_after=retrain_after,
            retraining=False, l1_on=l1_on, backend=backend, capturable=capturable,
            check_finite=check_finite,
        )  # fmt: skip
        SparseOptimizer.__init__(self, params, defaults)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        super()._check_hyperparameters(group)
        if group["w0"] != "zero":
            raise ValueError(f"{self._owner}: w0 is fixed to 'zero' for iRDA (use RDA for others)")

    def start_retraining(self) -> None:
        """Switch every parameter group to Step 2 (retraining) from the next step on."""
        for group in self.param_groups:
            group["retraining"] = True

    @property
    def in_retraining(self) -> bool:
        """True once any group is in Step 2 (by :meth:`start_retraining` or ``retrain_after``)."""
        for group in self.param_groups:
            if group["retraining"]:
                return True
            after = group["retrain_after"]
            if after is None:
                continue
            for p in group["params"]:
                step = self.state.get(p, {}).get("step")
                # The next step is retraining once t + 1 > retrain_after.
                if step is not None and float(step) >= after:
                    return True
        return False

"""pDCA_e: the proximal DC algorithm with extrapolation (Wen, Chen, Pong 2018) for the
exponential l0 surrogate ``r(t) = 1 - exp(-theta |t|)`` (the reproduction note's Algorithm 2;
docs/algorithms.md section 7)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from .._schedules import pdca_betas
from ._base import Bucket, Params, SparseOptimizer, lr_arg, new_step


class PDCA(SparseOptimizer):
    r"""pDCA_e for ``f(x) + l1 * sum_i (1 - exp(-theta |x_i|))``, a smooth-ish l0 surrogate.

    The penalty is split ``r = P1 - P2`` with ``P1 = theta |t|`` convex and
    ``xi(x) = grad P2(x) = theta sign(x) (1 - exp(-theta |x|))``. One step, per element:

    .. math::
        x_{t+1} = \mathrm{soft}\big(y_t - \mathrm{lr}\,(\nabla f(y_t) - \lambda\,\xi(x_t)),\
                  \mathrm{lr}\,\lambda\,\theta\big),\qquad
        y_{t+1} = x_{t+1} + \beta\,(x_{t+1} - x_t)

    with the FISTA weights ``beta`` of Algorithm 2 (``k_{-1} = k_0 = 1``,
    ``k_{t+1} = (1 + sqrt(1 + 4 k_t^2)) / 2``, ``beta_t = (k_{t-1} - 1) / k_t``), indexed as in
    the paper: step ``t`` makes ``x_t`` and writes ``y_t = x_t + beta_t (x_t - x_{t-1})``, so
    steps 1, 2, 3, 4 extrapolate with 0, 0.2818, 0.4340, 0.5311. After step ``n`` with
    ``n % restart == 0`` the pair is reset (``k_{n-1} = k_n = 1``): steps n, n + 1, n + 2 then
    use 0, 0, 0.2818, the weights of ``y_0 = x_0`` and of steps 1 and 2 (docs/algorithms.md
    section 7).

    **Which point the parameter holds.** The gradient must be taken at the extrapolated point,
    so between steps each parameter holds ``y`` and the optimizer state ``"x"`` holds the sparse
    iterate ``x`` (exact zeros). For evaluation or export use::

        with opt.eval_params():      # parameters hold x inside the block, y again after it
            evaluate(model)
        xs = opt.sparse_params()     # or read the x tensors directly

    ``theta -> 0`` with ``l1 * theta`` fixed reduces the step to the proximal gradient step
    with l1 weight ``l1 * theta`` (plus extrapolation; with ``restart=1`` to Prox-SGD exactly).

    Args:
        params: parameters or parameter groups.
        lr: step size ``1/L`` (required, >= 0).
        l1: the penalty weight ``lambda`` (required, >= 0).
        theta: the surrogate's sharpness ``theta`` (required, > 0; larger is closer to l0).
        restart: fixed restart period of the extrapolation (int >= 1, default 200; 1: no
            extrapolation).
        weight_decay: l2 term added to the gradient at ``y`` (>= 0, default 0).
        l1_on: ``"weights"`` (default: parameters with ``dim > 1``) or ``"all"``; uncovered
            parameters take extrapolated gradient steps without the penalty.
        backend: ``"auto"``, ``"native"`` or ``"reference"``.
        capturable, check_finite: CUDA-graph capture checks; raise on inf/NaN gradients
            (see :class:`~sparseopt.optim.SparseOptimizer`).

    Example:
        >>> opt = sparseopt.PDCA(model.parameters(), lr=0.05, l1=1e-4, theta=10.0)
    """

    op_name = "pdca_step_"
    _required = ("lr", "l1", "theta")
    _example = "{owner}(model.parameters(), lr=0.05, l1=1e-4, theta=10.0)"

    def __init__(
        self,
        params: Params,
        lr: float | None = None,
        l1: float | None = None,
        theta: float | None = None,
        restart: int = 200,
        weight_decay: float = 0.0,
        *,
        l1_on: str = "weights",
        backend: str = "auto",
        capturable: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, l1=l1, theta=theta, restart=restart, weight_decay=weight_decay,
            l1_on=l1_on, backend=backend, capturable=capturable, check_finite=check_finite,
        )  # fmt: skip
        self._betas: dict[tuple[int, torch.device], Tensor] = {}
        self._in_eval = False
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickling, copy.deepcopy
        super().__setstate__(state)
        self._betas = {}
        self._in_eval = False

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        owner = self._owner
        super()._check_hyperparameters(group)
        restart = group["restart"]
        if isinstance(restart, bool) or not isinstance(restart, int) or restart < 1:
            raise ValueError(
                f"{owner}: invalid restart = {restart!r}; accepted: an int >= 1 (steps between "
                "extrapolation restarts; 1 turns extrapolation off)"
            )

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step(param)
        state["x"] = param.detach().clone(memory_format=torch.preserve_format)

    def _beta_table(self, restart: int, device: torch.device) -> Tensor:
        key = (restart, device)
        table = self._betas.get(key)
        if table is None:  # once per (restart, device): the only host-to-device copy
            table = torch.tensor(pdca_betas(restart), dtype=torch.float64, device=device)
            self._betas[key] = table
        return table

    def _op_args(self, group: dict[str, Any], b: Bucket) -> list[Any]:
        return [
            [s["x"] for s in b.states],
            [s["step"] for s in b.states],
            self._beta_table(int(group["restart"]), b.params[0].device),
            lr_arg(group["lr"]),
            float(group["l1"]) if b.covered else 0.0,
            float(group["theta"]),
            float(group["weight_decay"]),
        ]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one pDCA_e step (the parameters must hold ``y``: not inside
        :meth:`eval_params`)."""
        if self._in_eval:
            raise RuntimeError(
                f"{self._owner}: step() was called inside `with opt.eval_params():`, where the "
                "parameters hold the sparse iterate x instead of the extrapolated point y the "
                "step needs; leave the block before stepping (nothing was changed)"
            )
        return super().step(closure)

    def sparse_params(self) -> list[Tensor]:
        """The sparse iterate ``x`` of every parameter, in ``param_groups`` order: after step
        ``t`` the paper's ``x_t`` (the parameter itself where it has not been stepped yet,
        since then ``x_0 = y_0``). These are the state tensors, not copies."""
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                x = self.state.get(p, {}).get("x")
                out.append(x if x is not None else p.detach())
        return out

    @contextlib.contextmanager
    def eval_params(self) -> Iterator[None]:
        """Within the block the parameters hold the sparse iterate ``x_t`` (for evaluation and
        export) instead of the extrapolated ``y_t = x_t + beta_t (x_t - x_{t-1})``; on exit, also
        on an exception, they hold ``y_t`` again, bit for bit. Nesting the block, or calling
        :meth:`step` inside it, raises RuntimeError."""
        if self._in_eval:
            raise RuntimeError(
                f"{self._owner}: eval_params() is already active; it cannot be nested (the "
                "parameters already hold x)"
            )
        saved: list[tuple[Tensor, Tensor]] = []
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    x = self.state.get(p, {}).get("x")
                    if x is None:
                        continue
                    saved.append((p, p.detach().clone(memory_format=torch.preserve_format)))
                    p.copy_(x)
        self._in_eval = True
        try:
            yield
        finally:
            self._in_eval = False
            with torch.no_grad():
                for p, y in saved:
                    p.copy_(y)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict (see :meth:`SparseOptimizer.load_state_dict`).

        A state dict saved by an earlier sparseopt, whose step ``t`` extrapolated with
        ``beta_{t-1}`` (one step behind the paper), has the same keys and loads as is: ``step``
        is still the number of steps taken and ``x`` the iterate ``x_t``. Only the parameters'
        ``y_t`` was extrapolated with that older weight; the resumed run takes its next gradient
        there and follows the paper from step ``t + 1`` on (README, pDCA_e).
        """
        if self._in_eval:
            raise RuntimeError(
                f"{self._owner}: load_state_dict() inside `with opt.eval_params():` is not "
                "supported; leave the block first"
            )
        super().load_state_dict(state_dict)

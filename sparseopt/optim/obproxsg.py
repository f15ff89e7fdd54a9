"""OBProx-SG and OBProx-SG+ (Chen et al. 2020, "Orthant Based Proximal Stochastic Gradient
Method for l1-Regularized Optimization"; reference code tianyic/obproxsg); docs/algorithms.md
section 6."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from .._schedules import obproxsg_is_orthant
from ._base import Bucket, Params, SparseOptimizer, lr_arg, new_step


def _check_count(owner: str, name: str, value: Any, accepted: str, allow_inf: bool = False) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (or ``math.inf`` when allowed)."""
    if allow_inf and isinstance(value, float) and value == math.inf:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: invalid {name} = {value!r}; accepted: {accepted}")


def _op_n_o(n_o: int | float) -> int:
    """``n_o`` as the op and the schedule take it: -1 for infinity (OBProx-SG+)."""
    return -1 if n_o == math.inf else int(n_o)


class OBProxSG(SparseOptimizer):
    r"""OBProx-SG: alternating Prox-SG and orthant phases, counted in epochs.

    **Schedule.** Each parameter's step count ``t`` (state ``step``, from 1) gives
    ``epoch = (t - 1) // steps_per_epoch``. The step is a *Prox-SG step* when
    ``epoch % (n_p + n_o) < n_p`` and an *orthant step* otherwise; with ``n_o = inf``
    (OBProx-SG+, :class:`OBProxSGPlus`) the first ``n_p`` epochs are Prox-SG and every later step
    is an orthant step. ``steps_per_epoch`` is required (``len(train_loader)`` in a usual loop):
    the phase is then a pure function of the step counter, so it needs no call from the user,
    survives ``state_dict()``/``load_state_dict()``, is decided on the device without a host
    sync, and a step that GradScaler skips does not count.

    **Prox-SG step** (per element): ``w <- soft(w - lr*g, lr*l1)``.

    **Orthant step** (per element), ``z = sign(w)``:

    .. math::
        \hat w = w - \mathrm{lr}\,(g + \lambda z)\ \text{where } z \ne 0,\qquad
        w \leftarrow \hat w \text{ if } \hat w z > \epsilon \text{ else } 0

    A zero stays exactly zero and no weight changes sign; the orthant phase only prunes.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (required, >= 0).
        l1: the l1 weight ``lambda`` (required, >= 0).
        n_p: epochs of each Prox-SG phase (int >= 1, default 5).
        n_o: epochs of each orthant phase (int >= 1 or ``math.inf``, default 5).
        steps_per_epoch: optimizer steps per epoch (required, int >= 1).
        eps: projection margin ``epsilon`` of the orthant step (>= 0, default 0).
        l1_on: ``"weights"`` (default: parameters with ``dim > 1``) or ``"all"`` (what the
            reference code does). Parameters the l1 term does not cover take plain SGD steps in
            both phases (the orthant projection would freeze their zeros and signs).
        backend: ``"auto"``, ``"native"`` or ``"reference"``.
        capturable, check_finite: CUDA-graph capture checks; raise on inf/NaN gradients
            (see :class:`~sparseopt.optim.SparseOptimizer`).

    Example:
        >>> opt = sparseopt.OBProxSG(model.parameters(), lr=0.1, l1=1e-4,
        ...                          steps_per_epoch=len(train_loader))
    """

    op_name = "obproxsg_step_"
    _required = ("lr", "l1", "steps_per_epoch")
    _example = "{owner}(model.parameters(), lr=0.1, l1=1e-4, steps_per_epoch=len(loader))"

    def __init__(
        self,
        params: Params,
        lr: float | None = None,
        l1: float | None = None,
        n_p: int = 5,
        n_o: int | float = 5,
        steps_per_epoch: int | None = None,
        eps: float = 0.0,
        *,
        l1_on: str = "weights",
        backend: str = "auto",
        capturable: bool = False,
        check_finite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, l1=l1, n_p=n_p, n_o=n_o, steps_per_epoch=steps_per_epoch, eps=eps,
            l1_on=l1_on, backend=backend, capturable=capturable, check_finite=check_finite,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        owner = self._owner
        super()._check_hyperparameters(group)
        _check_count(owner, "n_p", group["n_p"], "an int >= 1 (epochs of each Prox-SG phase)")
        _check_count(
            owner, "n_o", group["n_o"],
            "an int >= 1 or math.inf (epochs of each orthant phase; inf: OBProx-SG+)",
            allow_inf=True,
        )  # fmt: skip
        _check_count(
            owner, "steps_per_epoch", group["steps_per_epoch"],
            "an int >= 1 (optimizer steps per epoch, e.g. len(train_loader))",
        )  # fmt: skip

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step(param)

    def _op_args(self, group: dict[str, Any], b: Bucket) -> list[Any]:
        # no l1 term: Prox-SG with l1 = 0, i.e. SGD, in every phase
        n_o = _op_n_o(group["n_o"]) if b.covered else 0
        return [
            [s["step"] for s in b.states],
            lr_arg(group["lr"]),
            float(group["l1"]) if b.covered else 0.0,
            float(group["eps"]),
            int(group["steps_per_epoch"]),
            int(group["n_p"]),
            int(n_o),
        ]

    def phase(self, step: int | None = None) -> str:
        """``"prox"`` or ``"orthant"``: the phase of step ``step`` (counted from 1) of the first
        parameter group, or by default of the *next* step (reads a step counter: a host sync
        on CUDA, so do not call it inside a captured region)."""
        group = self.param_groups[0]
        if step is None:
            done = 0
            for p in group["params"]:
                s = self.state.get(p, {}).get("step")
                if s is not None:
                    done = int(s.item())
                    break
            step = done + 1
        orthant = obproxsg_is_orthant(step, int(group["steps_per_epoch"]), int(group["n_p"]),
                                      _op_n_o(group["n_o"]))  # fmt: skip
        return "orthant" if orthant else "prox"


class OBProxSGPlus(OBProxSG):
    r"""OBProx-SG+: ``n_p`` epochs of Prox-SG, then orthant steps for ever.

    The same as :class:`OBProxSG` with ``n_o = math.inf`` (see it for the schedule, the two
    steps and the arguments).

    Example:
        >>> opt = sparseopt.OBProxSGPlus(model.parameters(), lr=0.1, l1=1e-4, n_p=10,
        ...                              steps_per_epoch=len(train_loader))
    """

    def __init__(
        self,
        params: Params,
        lr: float | None = None,
        l1: float | None = None,
        n_p: int = 5,
        steps_per_epoch: int | None = None,
        eps: float = 0.0,
        *,
        l1_on: str = "weights",
        backend: str = "auto",
        capturable: bool = False,
        check_finite: bool = False,
    ) -> None:
        super().__init__(
            params, lr=lr, l1=l1, n_p=n_p, n_o=math.inf, steps_per_epoch=steps_per_epoch,
            eps=eps, l1_on=l1_on, backend=backend, capturable=capturable,
            check_finite=check_finite,
        )  # fmt: skip

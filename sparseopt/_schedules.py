"""Host-side schedules of the optimizers, functions of the step count alone: the optimizers,
the reference (the test oracle) and the tests share them; the kernels evaluate the same
schedules on the device (csrc/rules/obproxsg.h, and the beta table pdca_betas fills)."""

from __future__ import annotations

import math


def obproxsg_is_orthant(t: int, steps_per_epoch: int, n_p: int, n_o: int) -> bool:
    """Whether step ``t`` (counted from 1) is an orthant step: ``epoch = (t-1) // steps_per_epoch``;
    ``n_o < 0`` is infinity (OBProx-SG+), ``n_o == 0`` Prox-SG only."""
    epoch = (t - 1) // steps_per_epoch
    if n_o < 0:
        return epoch >= n_p
    if n_o == 0:
        return False
    return epoch % (n_p + n_o) >= n_p


def pdca_betas(restart: int) -> list[float]:
    """The extrapolation weights of one restart period (docs/algorithms.md section 7):
    ``betas[m]`` is the beta with which step t extrapolates when ``t % restart == m`` (t counted
    from 1): ``betas[m] = beta_m = (k_{m-1} - 1) / k_m`` of the FISTA recurrence
    ``k_{m+1} = (1 + sqrt(1 + 4 k_m^2)) / 2`` from ``k_{-1} = k_0 = 1``.

    Indexed as in the paper: the step that makes ``x_t`` is followed by
    ``y_t = x_t + beta_t (x_t - x_{t-1})``, so steps 1, 2, 3 extrapolate with 0, 0.2818, 0.4340
    (``betas[0] = beta_0 = 0`` belongs to no step of the first period: ``y_0 = x_0``). After step
    n with ``n % restart == 0`` the pair is reset to ``k_{n-1} = k_n = 1``, so step n uses
    ``betas[0] = 0``, step n + 1 ``betas[1] = 0`` and step n + 2 ``betas[2] = 0.2818``.
    """
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 1:
        raise ValueError(f"pdca_betas: invalid restart = {restart!r}; accepted: an int >= 1")
    out = []
    k_prev, k = 1.0, 1.0
    for _ in range(restart):
        out.append((k_prev - 1.0) / k)
        k_prev, k = k, (1.0 + math.sqrt(1.0 + 4.0 * k * k)) / 2.0
    return out

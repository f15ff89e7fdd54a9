"""Pure-PyTorch reference of the l1 family: Prox-SGD, sqrt(t)-Prox-SGD, RDA and iRDA.

Same signatures and semantics as the native ops ``torch.ops.sparseopt.*`` (csrc/ops/l1.cpp);
formulas in docs/algorithms.md sections 1-4 and csrc/rules/prox_sgd.h, csrc/rules/rda.h.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._domains import check_op_hyper
from ._common import (
    bump_steps,
    host_lr,
    check_lists,
    inv_scale,
    load_grad,
    opmath_dtype,
    skip_step,
    soft_threshold,
)


def _prox_sgd_family(
    op: str,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    steps: Sequence[Tensor] | None,
    lr: float | Tensor,
    l1: float,
    gamma: float,
    momentum: float,
    weight_decay: float,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> None:
    lr = host_lr(op, lr)
    gammas = {} if steps is None else {"gamma": gamma}  # prox_sgd_step_ has no gamma
    check_op_hyper(op.removeprefix("sparseopt::"), lr=lr, l1=l1, **gammas, momentum=momentum,
                   weight_decay=weight_decay)  # fmt: skip
    if (momentum != 0) != (len(momentum_buffers) > 0) and len(params) > 0:
        raise RuntimeError(
            f"{op}: momentum_buffers must hold one buffer per parameter when momentum != 0 and "
            f"be empty when momentum == 0 (got {len(momentum_buffers)} buffers, "
            f"momentum = {momentum})"
        )
    lists = [("params", params), ("grads", grads)]
    if momentum != 0:
        lists.append(("momentum_buffers", momentum_buffers))
    check_lists(op, lists, steps, grad_scale, found_inf)
    if skip_step(found_inf):
        return
    ts = bump_steps(steps) if steps is not None else None
    for i, (p, grad) in enumerate(zip(params, grads)):
        T = opmath_dtype(p.dtype)
        w = p.to(T)
        g = load_grad(grad, T, inv_scale(grad_scale, T))
        if weight_decay != 0:
            g = g + weight_decay * w
        if momentum != 0:
            m = momentum * momentum_buffers[i].to(T) + g
            momentum_buffers[i].copy_(m)
            g = m
        if ts is None:
            threshold = lr * l1
        else:
            threshold = l1 * math.sqrt(ts[i]) / gamma
        p.copy_(soft_threshold(w - lr * g, threshold))


def prox_sgd_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    lr: float | Tensor,
    l1: float,
    momentum: float,
    weight_decay: float,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """Prox-SGD: ``w <- soft(w - lr*g, lr*l1)``, optional heavy-ball momentum and l2 decay."""
    _prox_sgd_family(
        "sparseopt::prox_sgd_step_", params, grads, momentum_buffers, None,
        lr, l1, 1.0, momentum, weight_decay, grad_scale, found_inf,
    )  # fmt: skip


def sqrt_t_prox_sgd_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    steps: Sequence[Tensor],
    lr: float | Tensor,
    l1: float,
    gamma: float,
    momentum: float,
    weight_decay: float,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """sqrt(t)-Prox-SGD: ``w <- soft(w - lr*g, l1*sqrt(t)/gamma)``; bumps ``steps``."""
    _prox_sgd_family(
        "sparseopt::sqrt_t_prox_sgd_step_", params, grads, momentum_buffers, steps,
        lr, l1, gamma, momentum, weight_decay, grad_scale, found_inf,
    )  # fmt: skip


def rda_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    grad_avgs: Sequence[Tensor],
    centers: Sequence[Tensor],
    steps: Sequence[Tensor],
    lr: float | Tensor,
    l1: float,
    gamma: float,
    retrain: bool,
    retrain_after: int,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """RDA / iRDA: ``gbar <- gbar + (g - gbar)*(1/t); w <- soft(w0 - s*gbar, s*l1)``,
    ``s = lr*sqrt(t)/gamma``; ``centers`` empty means ``w0 = 0``. In retraining (``retrain`` or
    ``t > retrain_after >= 0``) the gradient is masked where ``w == 0`` and zeros stay zero."""
    op = "sparseopt::rda_step_"
    lr = host_lr(op, lr)
    check_op_hyper("rda_step_", lr=lr, l1=l1, gamma=gamma)
    if len(centers) not in (0, len(params)):
        raise RuntimeError(
            f"{op}: centers must be empty (w0 = 0) or hold one tensor per parameter, got "
            f"{len(centers)} for {len(params)} parameters"
        )
    lists = [("params", params), ("grads", grads), ("grad_avgs", grad_avgs)]
    if len(centers) > 0:
        lists.append(("centers", centers))
    check_lists(op, lists, steps, grad_scale, found_inf)
    if skip_step(found_inf):
        return
    ts = bump_steps(steps)
    for i, (p, grad) in enumerate(zip(params, grads)):
        t = ts[i]
        T = opmath_dtype(p.dtype)
        scale = lr * math.sqrt(t) / gamma
        masked = retrain or (retrain_after >= 0 and t > retrain_after)
        w = p.to(T)
        g = load_grad(grad, T, inv_scale(grad_scale, T))
        if masked:
            frozen = w == 0
            g = torch.where(frozen, 0.0, g)
        gbar = grad_avgs[i].to(T)
        gbar = gbar + (g - gbar) * (1.0 / t)
        grad_avgs[i].copy_(gbar)
        center = centers[i].to(T) if len(centers) > 0 else 0.0
        new_w = soft_threshold(center - scale * gbar, scale * l1)
        if masked:
            new_w = torch.where(frozen, 0.0, new_w)
        p.copy_(new_w)

"""Pure-PyTorch reference of AdaHessian's two ops (csrc/rules/adahessian.h), same operation
order as the native kernels; formulas in docs/algorithms.md section 9."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._domains import check_op_hyper
from ._common import (
    bump_steps,
    host_lr,
    check_lists,
    ieee_sqrt,
    inv_scale,
    load_grad,
    opmath_dtype,
    skip_step,
)


def _row_length(t: Tensor) -> int:
    return t.shape[2] * t.shape[3] if t.dim() == 4 else 1


def hutchinson_diag_(
    diags: Sequence[Tensor],
    zs: Sequence[Tensor],
    hzs: Sequence[Tensor],
    weight: float,
    accumulate: bool,
) -> None:
    """``D <- (accumulate ? D : 0) + weight * mean over spatial taps of |z * Hz|``."""
    op = "sparseopt::hutchinson_diag_"
    check_op_hyper("hutchinson_diag_", weight=weight)
    check_lists(op, [("diags", diags), ("zs", zs), ("hzs", hzs)])
    for d, z, hz in zip(diags, zs, hzs):
        if d.numel() == 0:
            continue
        T = opmath_dtype(d.dtype)
        row_len = _row_length(d)
        prod = (z.to(T) * hz.to(T)).abs().reshape(-1, row_len)
        total = torch.zeros(prod.shape[0], dtype=T, device=d.device)
        for k in range(row_len):  # sequential, in the kernel's order
            total = total + prod[:, k]
        value = (weight * (total / row_len)).unsqueeze(1).expand(-1, row_len)
        if accumulate:
            # Element by element, as the native kernels do: D's rows are constant when D came
            # from this op, but a diagonal loaded or edited in between need not be.
            value = d.to(T).reshape(-1, row_len) + value
        d.copy_(value.reshape(d.shape))


def adahessian_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_hessian_diag_sqs: Sequence[Tensor],
    hessian_diags: Sequence[Tensor],
    steps: Sequence[Tensor],
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    hessian_power: float,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """``m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) D^2;
    w <- w - ((lr/(1-b1^t)) m) / ((sqrt(v) (1/sqrt(1-b2^t)))^k + eps) - lr wd w``, the two
    bias-correction factors in double and rounded once (csrc/rules/adahessian.h)."""
    op = "sparseopt::adahessian_step_"
    lr = host_lr(op, lr)
    check_op_hyper("adahessian_step_", lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                   weight_decay=weight_decay, hessian_power=hessian_power)
    check_lists(op, [("params", params), ("grads", grads), ("exp_avgs", exp_avgs),
                     ("exp_hessian_diag_sqs", exp_hessian_diag_sqs),
                     ("hessian_diags", hessian_diags)], steps, grad_scale, found_inf)
    if skip_step(found_inf):
        return
    ts = bump_steps(steps)
    for i, p in enumerate(params):
        t = ts[i]
        T = opmath_dtype(p.dtype)
        w = p.to(T)
        g = load_grad(grads[i], T, inv_scale(grad_scale, T))
        d = hessian_diags[i].to(T)
        m = beta1 * exp_avgs[i].to(T) + (1 - beta1) * g
        v = beta2 * exp_hessian_diag_sqs[i].to(T) + (1 - beta2) * (d * d)
        base = ieee_sqrt(v) * (1 / (1 - beta2**t) ** 0.5)
        if hessian_power == 0.5:  # the square root, correctly rounded, as the native kernels
            base = ieee_sqrt(base.double()).to(T)
        elif hessian_power != 1.0:
            base = base.double().pow(hessian_power).to(T)
        denom = base + eps
        new_w = w - ((lr / (1 - beta1**t)) * m) / denom - (lr * weight_decay) * w
        p.copy_(new_w)
        exp_avgs[i].copy_(m)
        exp_hessian_diag_sqs[i].copy_(v)

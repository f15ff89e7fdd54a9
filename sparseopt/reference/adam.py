"""Pure-PyTorch reference of Adam/AdamW (``adam_step_``; docs/algorithms.md section 8), the op
order of torch.optim.Adam's single-tensor path (csrc/rules/adam.h), fused multiply-adds included.
The one difference from ``torch.optim.Adam(foreach=False)`` is the square root: correctly rounded
here and in the native kernel, while torch's vectorised float32 sqrt is sometimes one ulp off.
fp16/bf16 are computed in fp32 and rounded once, like the native kernel."""

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
    soft_threshold,
)


def adam_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    max_exp_avg_sqs: Sequence[Tensor],
    steps: Sequence[Tensor],
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    l1: float,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """Adam (AdamW with ``decoupled_weight_decay``), optional l1 prox ``soft(w, lr*l1)``."""
    op = "sparseopt::adam_step_"
    lr = host_lr(op, lr)
    check_op_hyper("adam_step_", lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                   weight_decay=weight_decay, l1=l1)
    if not amsgrad and len(max_exp_avg_sqs) > 0 and len(params) > 0:
        raise RuntimeError(
            f"{op}: max_exp_avg_sqs must be empty when amsgrad is False "
            f"(got {len(max_exp_avg_sqs)})"
        )
    lists = [("params", params), ("grads", grads), ("exp_avgs", exp_avgs),
             ("exp_avg_sqs", exp_avg_sqs)]
    if amsgrad:
        lists.append(("max_exp_avg_sqs", max_exp_avg_sqs))
    check_lists(op, lists, steps, grad_scale, found_inf)
    if skip_step(found_inf):
        return
    ts = bump_steps(steps)
    for i, p in enumerate(params):
        t = ts[i]
        T = opmath_dtype(p.dtype)
        w = p.to(T, copy=True)
        g = load_grad(grads[i], T, inv_scale(grad_scale, T))
        if maximize:
            g = -g
        if weight_decay != 0:
            if decoupled_weight_decay:
                w.mul_(1 - lr * weight_decay)
            else:
                g = g.add(w, alpha=weight_decay)
        m = exp_avgs[i].to(T, copy=True).lerp_(g, 1 - beta1)
        v = exp_avg_sqs[i].to(T, copy=True).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        step_size = lr / bias_correction1
        if amsgrad:
            vmax = torch.maximum(max_exp_avg_sqs[i].to(T), v)
            max_exp_avg_sqs[i].copy_(vmax)
            denom = (ieee_sqrt(vmax) / bias_correction2**0.5).add_(eps)
        else:
            denom = (ieee_sqrt(v) / bias_correction2**0.5).add_(eps)
        w.addcdiv_(m, denom, value=-step_size)
        if l1 > 0:
            w = soft_threshold(w, lr * l1)
        p.copy_(w)
        exp_avgs[i].copy_(m)
        exp_avg_sqs[i].copy_(v)

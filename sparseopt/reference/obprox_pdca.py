"""Pure-PyTorch reference of OBProx-SG / OBProx-SG+ and pDCA_e (exponential l0 surrogate).

Same signatures and semantics as the native ops ``torch.ops.sparseopt.obproxsg_step_`` and
``torch.ops.sparseopt.pdca_step_`` (csrc/ops/obprox_pdca.cpp); formulas in docs/algorithms.md
sections 6 and 7 (OBProx-SG, pDCA_e; the step counter: docs/algorithms.md section 0) and
csrc/rules/obproxsg.h, csrc/rules/pdca.h, replayed operation by operation so that the native CPU
kernels equal these functions bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._schedules import obproxsg_is_orthant
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

# -- OBProx-SG ---------------------------------------------------------------------------------


def _check_int(op: str, name: str, value: int, ok: bool, accepted: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not ok:
        raise RuntimeError(f"{op}: {name} = {value} is invalid; accepted: {accepted}")


def orthant_step(w: Tensor, g: Tensor, lr: float, l1: float, eps: float) -> Tensor:
    """One orthant step in math type: zeros stay zero, no sign flips (NaN stays NaN). The
    arrangement of csrc/rules/obproxsg.h: ``wh = w - lr*(g + l1*sign(w))``, then 0 where
    ``w == 0`` or ``wh*sign(w) <= eps``."""
    z = torch.where(w > 0, 1.0, torch.where(w < 0, -1.0, 0.0)).to(w.dtype)
    wh = w - lr * (g + l1 * z)
    return torch.where((w == 0) | (wh * z <= eps), 0.0, wh)


def obproxsg_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    steps: Sequence[Tensor],
    lr: float | Tensor,
    l1: float,
    eps: float,
    steps_per_epoch: int,
    n_p: int,
    n_o: int,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """OBProx-SG: a Prox-SG step ``w <- soft(w - lr*g, lr*l1)`` or an orthant step, chosen per
    tensor from its step count (see :func:`obproxsg_is_orthant`); bumps ``steps``."""
    op = "sparseopt::obproxsg_step_"
    lr = host_lr(op, lr)
    check_op_hyper("obproxsg_step_", lr=lr, l1=l1, eps=eps)
    _check_int(op, "steps_per_epoch", steps_per_epoch, steps_per_epoch >= 1, "an int >= 1")
    _check_int(op, "n_p", n_p, n_p >= 1, "an int >= 1")
    _check_int(
        op, "n_o", n_o, n_o >= -1,
        "an int >= 1, 0 (Prox-SG phase only) or -1 (infinity: OBProx-SG+)",
    )  # fmt: skip
    check_lists(op, [("params", params), ("grads", grads)], steps, grad_scale, found_inf)
    if skip_step(found_inf):
        return
    ts = bump_steps(steps)
    for i, (p, grad) in enumerate(zip(params, grads)):
        T = opmath_dtype(p.dtype)
        w = p.to(T)
        g = load_grad(grad, T, inv_scale(grad_scale, T))
        if obproxsg_is_orthant(int(ts[i]), steps_per_epoch, n_p, n_o):
            p.copy_(orthant_step(w, g, lr, l1, eps))
        else:
            p.copy_(soft_threshold(w - lr * g, lr * l1))


# -- pDCA_e ------------------------------------------------------------------------------------


# Constants of csrc/rules/pdca.h (ExpConstants, exp_horner_).
_LOG2E = 1.4426950408889634
_LN2 = {
    torch.float32: (0.693359375, -2.12194440e-4),
    torch.float64: (6.93147180369123816490e-01, 1.90821492927058770002e-10),
}
_DEGREE = {torch.float32: 7, torch.float64: 13}
_MAX_ARG = 40.0
_CPU_BLOCK = 1 << 16  # elements per block of exp_neg_clamped on the CPU
# magic, its bits, the int type of the bits, mantissa bits, exponent bias
_MAGIC = {
    torch.float32: (12582912.0, 0x4B400000, torch.int32, 23, 127),
    torch.float64: (6755399441055744.0, 0x4338000000000000, torch.int64, 52, 1023),
}


def mul_add(a: Tensor, b: Tensor | float, c: Tensor | float) -> Tensor:
    """``a * b + c`` as csrc/rules/bits.h's ``mul_add_``: rounded once (a fused multiply-add) in
    float32, twice (product, then sum) in float64; ``b`` and ``c`` are rounded to ``a``'s dtype.

    The float32 FMA is exact through float64: the product of two floats is exact there, TwoSum
    gives the sum's rounding error, the sum is moved to its odd neighbour when inexact (rounding to
    odd at 53 bits), and rounding that to float32 is the correctly rounded ``a * b + c`` (Boldo and
    Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to
    odd", 2008: 53 >= 24 + 2)."""
    dtype = a.dtype
    b = torch.as_tensor(b, dtype=dtype, device=a.device)
    c = torch.as_tensor(c, dtype=dtype, device=a.device)
    if dtype == torch.float64:
        return a * b + c
    if dtype != torch.float32:
        raise TypeError(f"mul_add: float32 or float64, got {dtype}")
    p = a.double() * b.double()  # exact: 24 + 24 significant bits
    c64 = c.double()
    s = p + c64
    c_virtual = s - p  # TwoSum: s + e == p + c exactly
    p_virtual = s - c_virtual
    e = (p - p_virtual) + (c64 - c_virtual)
    bits = s.view(torch.int64)
    inexact = (e > 0) | (e < 0)  # not for inf / NaN
    even = (bits & 1) == 0
    # the odd neighbour lies toward the exact sum: one step up in magnitude when e has s's sign
    step = torch.where((e > 0) == (s > 0), 1, -1)
    bits = torch.where(inexact & even, bits + step, bits)
    return bits.view(torch.float64).float()


def exp_neg_clamped(t: Tensor) -> Tensor:
    """exp(-t) for t >= 0 (clamped to t <= 40), in t's dtype (float32 or float64), by exactly the
    operations of csrc/rules/pdca.h: Cody-Waite reduction with k = round(t/ln2) from a
    magic-number addition, Taylor/Horner of exp(-s) (fused multiply-adds in float32:
    :func:`mul_add`), and 2^-k built from the bits of that sum."""
    if t.device.type == "cpu" and t.dtype == torch.float32 and t.numel() > _CPU_BLOCK:
        # mul_add's float64 temporaries of a whole tensor would each be fresh memory; in blocks
        # they stay in the caches (4-5x faster on 11M elements; the same values)
        flat = t.reshape(-1)
        return torch.cat([exp_neg_clamped(b) for b in flat.split(_CPU_BLOCK)]).view_as(t)
    dtype = t.dtype
    ln2_hi, ln2_lo = _LN2[dtype]
    magic, magic_bits, int_t, mantissa, bias = _MAGIC[dtype]
    t = torch.where(t <= _MAX_ARG, t, _MAX_ARG).to(dtype)
    q = mul_add(t, _LOG2E, magic)
    k = q - magic
    s = mul_add(k, -ln2_hi, t)
    s = mul_add(k, -ln2_lo, s)
    degree = _DEGREE[dtype]
    p = torch.full_like(s, (-1) ** degree / math.factorial(degree))
    for j in range(degree - 1, -1, -1):
        p = mul_add(p, s, (-1) ** j / math.factorial(j))
    neg_k_biased = (magic_bits + bias) - q.view(int_t)
    scale = (neg_k_biased << mantissa).view(dtype)
    return p * scale


def pdca_xi(x: Tensor, theta: float) -> Tensor:
    """xi(x) = theta * sign(x) * (1 - exp(-theta |x|)), the gradient of P2 (NaN stays NaN)."""
    e = exp_neg_clamped(theta * x.abs())
    return torch.copysign(theta * (1.0 - e), x) + torch.where(x != x, x, 0.0)


def pdca_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    iterates: Sequence[Tensor],
    steps: Sequence[Tensor],
    betas: Tensor,
    lr: float | Tensor,
    l1: float,
    theta: float,
    weight_decay: float,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """pDCA_e: with ``y`` = params, ``x`` = iterates, ``beta = betas[t % len(betas)]``::

        x_new = soft(y - lr*(g + wd*y - l1*xi(x)), lr*l1*theta);  y_new = x_new + beta*(x_new - x)

    writes ``iterates <- x_new`` and ``params <- y_new``; bumps ``steps``."""
    op = "sparseopt::pdca_step_"
    lr = host_lr(op, lr)
    check_op_hyper("pdca_step_", lr=lr, l1=l1, theta=theta, weight_decay=weight_decay)
    if (
        betas.layout != torch.strided
        or betas.dim() != 1
        or betas.numel() < 1
        or betas.dtype != torch.float64
        or not betas.is_contiguous()
    ):
        raise RuntimeError(
            f"{op}: betas must be a contiguous 1-D float64 tensor with one entry per step of the "
            f"restart period (restart >= 1 entries), got {betas.dtype} of shape "
            f"{list(betas.shape)}"
        )
    if len(params) > 0 and betas.device != params[0].device:
        raise RuntimeError(
            f"{op}: betas is on {betas.device} but the parameters are on {params[0].device}; "
            "it must be on the parameters' device"
        )
    lists = [("params", params), ("grads", grads), ("iterates", iterates)]
    check_lists(op, lists, steps, grad_scale, found_inf)
    if skip_step(found_inf):
        return
    ts = bump_steps(steps)
    period = betas.numel()
    for i, (p, grad) in enumerate(zip(params, grads)):
        T = opmath_dtype(p.dtype)
        beta = float(betas[int(ts[i]) % period])  # beta_t: the paper's index (section 7)
        y = p.to(T)
        x = iterates[i].to(T)
        g = load_grad(grad, T, inv_scale(grad_scale, T))
        if weight_decay != 0:
            g = g + weight_decay * y
        xi = pdca_xi(x, theta)
        x_new = soft_threshold(y - lr * (g - l1 * xi), lr * l1 * theta)
        p.copy_(x_new + beta * (x_new - x))
        iterates[i].copy_(x_new)

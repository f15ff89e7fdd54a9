"""Helpers shared by the pure-PyTorch reference kernels (the shared conventions: soft threshold,
math type, step counter and GradScaler, docs/algorithms.md section 0).

The references are the oracle the native kernels are tested against, bit for bit, and the
fallback where no native kernel exists. They follow the numerical contract of csrc/rules/common.h:
math in the "opmath" type (float32 for fp32/fp16/bf16 storage, float64 for fp64), per-tensor
scalars computed as Python floats (double) and rounded once by torch, and one torch op per
arithmetic operation, in the order the C++ formula writes it (torch ops that fuse a multiply
and an add, such as ``add(..., alpha=)``, ``addcmul`` or ``lerp``, are avoided on purpose).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def soft_threshold(u: Tensor, a: float) -> Tensor:
    """soft(u, a) = sign(u) * max(|u| - a, 0); zeros keep the sign of u, NaN stays NaN."""
    return torch.copysign(torch.clamp_min(u.abs() - a, 0), u)


def ieee_sqrt(x: Tensor) -> Tensor:
    """Correctly rounded square root, as the native kernels compute it.

    torch's vectorised CPU sqrt is sometimes one ulp off. float32: sqrt in float64 rounded to
    float32 is correctly rounded (float64 carries more than 2*24+2 bits). float64 on the CPU:
    numpy's sqrt (the hardware instruction). CUDA's sqrt is correctly rounded already.
    """
    if x.dtype == torch.float32:
        return x.double().sqrt().float()
    if x.dtype == torch.float64 and x.device.type == "cpu":
        import numpy as np

        # asarray: numpy returns a scalar, not an array, for a 0-d input (a scalar parameter);
        # errstate: sqrt of a negative is NaN, as in torch, without a RuntimeWarning.
        with np.errstate(invalid="ignore"):
            return torch.from_numpy(np.asarray(np.sqrt(x.detach().contiguous().numpy())))
    return x.sqrt()


def inv_scale(grad_scale: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """1/scale as GradScaler computes it (double reciprocal), rounded to the math type."""
    if grad_scale is None:
        return None
    return grad_scale.double().reciprocal().to(dtype)


def skip_step(found_inf: Tensor | None) -> bool:
    return found_inf is not None and bool(found_inf.item() != 0)


def load_grad(grad: Tensor, dtype: torch.dtype, scale: Tensor | None) -> Tensor:
    """The gradient in math type; unscaled in place (as torch's fused optimizers do) if scaled."""
    g = grad.to(dtype)
    if scale is not None:
        g = g * scale
        grad.copy_(g)
    return g


def bump_steps(steps: Sequence[Tensor]) -> list[float]:
    """steps[i] += 1 and return the new values (the t of this step)."""
    out = []
    for s in steps:
        s.add_(1)
        out.append(float(s.item()))
    return out


def check_lists(
    op: str,
    lists: Sequence[tuple[str, Sequence[Tensor]]],
    steps: Sequence[Tensor] | None = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """The checks of csrc/common/tensor_lists.h, for the reference path (same contract)."""
    name0, params = lists[0]
    n = len(params)
    for name, ts in lists:
        if len(ts) != n:
            raise RuntimeError(
                f"{op}: {name} has {len(ts)} tensors but {name0} has {n}; "
                "the lists must match one to one"
            )
    if steps is not None and len(steps) != n:
        raise RuntimeError(f"{op}: steps has {len(steps)} tensors but {name0} has {n}")
    if n == 0:
        return
    device = params[0].device
    for i, p in enumerate(params):
        for name, ts in lists:
            t = ts[i]
            if t.layout != torch.strided:
                raise RuntimeError(
                    f"{op}: {name}[{i}] has layout {t.layout}; only dense (strided) tensors "
                    "are supported, so sparse gradients are not"
                )
            if t.dtype not in SUPPORTED_DTYPES:
                raise RuntimeError(
                    f"{op}: {name}[{i}] has dtype {t.dtype}; supported dtypes are float32, "
                    "float64, float16 and bfloat16"
                )
            if t.device != device:
                raise RuntimeError(
                    f"{op}: {name}[{i}] is on {t.device} but {name0}[0] is on {device}; "
                    "all tensors of one call must be on one device"
                )
            if t.dtype != p.dtype:
                raise RuntimeError(
                    f"{op}: {name}[{i}] has dtype {t.dtype} but {name0}[{i}] has {p.dtype}; "
                    "gradients and state must have their parameter's dtype"
                )
            if t.shape != p.shape:
                raise RuntimeError(
                    f"{op}: {name}[{i}] has shape {list(t.shape)} but {name0}[{i}] has shape "
                    f"{list(p.shape)}"
                )
    scalars = [(f"steps[{i}]", s) for i, s in enumerate(steps or [])]
    scalars += [("grad_scale", grad_scale), ("found_inf", found_inf)]
    for what, s in scalars:
        if s is None:
            continue
        if s.dtype != torch.float32 or s.numel() != 1:
            raise RuntimeError(f"{op}: {what} must be a float32 tensor with one element")
        if s.device != device:
            raise RuntimeError(
                f"{op}: {what} is on {s.device} but the parameters are on {device}; "
                "it must be on the parameters' device"
            )


def host_lr(op: str, lr: float | Tensor) -> float:
    """The value of an op's ``lr``: a float, or a one-element float tensor (the ``.tensor_lr``
    overload; read on the host here, on the device by the native CUDA kernels)."""
    if isinstance(lr, Tensor):
        if lr.layout != torch.strided or lr.numel() != 1 or not lr.is_floating_point():
            raise RuntimeError(
                f"{op}: lr must be a float or a real floating-point tensor with one element, got "
                f"{lr.dtype} of shape {list(lr.shape)}"
            )
        return float(lr)
    return lr

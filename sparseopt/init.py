"""Initialisation for iRDA (iRDA paper, section 3.5, eq. 25; docs/algorithms.md section 5)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["irda_", "irda_model_", "irda_bound"]


def irda_bound(weight: Tensor | torch.Size, s: float) -> float:
    """Half-width ``sqrt(3) * sigma`` of the iRDA uniform init, ``sigma = s / sqrt(n)``.

    ``n = k^2 * c``: the fan-in (input channels per group times the kernel's spatial size; for a
    Linear weight, ``in_features``).
    """
    shape = weight.shape if isinstance(weight, Tensor) else torch.Size(weight)
    if len(shape) < 2:
        raise ValueError(
            f"irda_: needs a weight with at least 2 dims (out, in, *kernel), got shape "
            f"{list(shape)}; biases and norm scales are not initialised by iRDA's rule"
        )
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not (s > 0 and math.isfinite(s)):
        raise ValueError(f"irda_: invalid s = {s!r}; accepted: a finite float > 0")
    fan_in = math.prod(shape[1:])
    if fan_in == 0:
        raise ValueError(f"irda_: weight of shape {list(shape)} has fan-in 0")
    return math.sqrt(3.0) * s / math.sqrt(fan_in)


@torch.no_grad()
def irda_(tensor: Tensor, s: float, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` in place from U(-a, a) with mean 0 and standard deviation
    ``sigma = sqrt(s^2 / n)``, ``a = sqrt(3) sigma``, ``n`` the fan-in (eq. 25).

    The paper recommends ``s`` much larger than sqrt(2) (He init's gain) for iRDA.
    Returns ``tensor``.
    """
    a = irda_bound(tensor, s)
    return tensor.uniform_(-a, a, generator=generator)


@torch.no_grad()
def irda_model_(model: nn.Module, s: float, generator: torch.Generator | None = None) -> nn.Module:
    """Apply :func:`irda_` to every parameter of ``model`` with at least 2 dims (the conv and
    linear weights iRDA's l1 covers); biases and norm parameters are left as they are.
    Returns ``model``."""
    for p in model.parameters():
        if p.dim() >= 2:
            irda_(p, s, generator=generator)
    return model

"""The compressed weight formats of the sparse conv layers, and their converters.

All index tensors are int32, on the weight's device:

* pointwise, CSR over output channels: ``row_ptr[O + 1]``, ``col_idx[nnz]`` (input channel),
  ``values[nnz]``; output channel ``o`` owns entries ``row_ptr[o]:row_ptr[o + 1]``;
* depthwise, per channel list of nonzero taps: ``tap_ptr[C + 1]``, ``tap_idx[nnz]``
  (``ky * kw + kx``), ``values[nnz]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _is_int(v: Any) -> bool:
    """An int (or a numpy/torch integer scalar), not a bool, a float or a string."""
    if isinstance(v, bool) or isinstance(v, (float, str, bytes)):
        return False
    if isinstance(v, torch.Tensor):
        return v.dim() == 0 and not v.is_floating_point() and v.dtype != torch.bool
    return hasattr(v, "__index__")


def _pair(v: int | Sequence[int], name: str, minimum: int = 1, layer: str = "") -> tuple[int, int]:
    """(v, v) for an int, (a, b) for a pair (or a 1-tuple); each an int >= minimum."""
    prefix = f"{layer}: " if layer else ""
    if _is_int(v):
        t: tuple[Any, ...] = (v, v)
    elif isinstance(v, (tuple, list)) and len(v) in (1, 2):
        t = tuple(v) if len(v) == 2 else (v[0], v[0])
    else:
        raise ValueError(f"{prefix}{name} must be an int or a pair of ints (each >= {minimum}), "
                         f"got {v!r}")
    if not all(_is_int(i) and int(i) >= minimum for i in t):
        raise ValueError(f"{prefix}{name} must be an int or a pair of ints, each >= {minimum}; "
                         f"got {v!r}")
    return (int(t[0]), int(t[1]))


def _compress_rows(w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR of a 2-D tensor: (row_ptr int32[R + 1], col int32[nnz], values[nnz]), exact zeros
    dropped, columns ascending within a row."""
    nz = w2 != 0
    row_ptr = torch.zeros(w2.shape[0] + 1, dtype=torch.int32, device=w2.device)
    row_ptr[1:] = nz.sum(dim=1).cumsum(0).to(torch.int32)
    idx = nz.nonzero()
    return row_ptr, idx[:, 1].to(torch.int32).contiguous(), w2[nz].contiguous()


def dense_to_csr(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR over output channels of a 1x1 conv weight ``[O, C, 1, 1]`` (or ``[O, C]``)."""
    if weight.dim() == 4:
        if weight.shape[2:] != (1, 1):
            raise ValueError(f"dense_to_csr: expected a [O, C, 1, 1] weight, got {list(weight.shape)}")
        weight = weight.reshape(weight.shape[0], weight.shape[1])
    if weight.dim() != 2:
        raise ValueError(f"dense_to_csr: expected a [O, C, 1, 1] or [O, C] weight, got {list(weight.shape)}")
    return _compress_rows(weight.detach())


def dense_to_taps(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel nonzero taps of a depthwise weight ``[C, 1, kh, kw]``."""
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(f"dense_to_taps: expected a [C, 1, kh, kw] weight, got {list(weight.shape)}")
    return _compress_rows(weight.detach().reshape(weight.shape[0], -1))


def _expand(ptr: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    counts = (ptr[1:] - ptr[:-1]).long()
    row = torch.repeat_interleave(torch.arange(rows, device=values.device), counts)
    dense = values.new_zeros(rows, cols)
    return dense.index_put((row, idx.long()), values, accumulate=True)


def csr_to_dense(row_ptr: torch.Tensor, col_idx: torch.Tensor, values: torch.Tensor, in_channels: int) -> torch.Tensor:
    """The dense ``[O, C, 1, 1]`` weight of a CSR pointwise weight."""
    out_channels = row_ptr.numel() - 1
    return _expand(row_ptr, col_idx, values, out_channels, in_channels).reshape(out_channels, in_channels, 1, 1)


def taps_to_dense(tap_ptr: torch.Tensor, tap_idx: torch.Tensor, values: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """The dense ``[C, 1, kh, kw]`` weight of a depthwise tap list."""
    kh, kw = _pair(kernel_size, "kernel_size")
    channels = tap_ptr.numel() - 1
    return _expand(tap_ptr, tap_idx, values, channels, kh * kw).reshape(channels, 1, kh, kw)

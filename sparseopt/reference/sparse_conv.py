"""Pure-PyTorch references of the compressed sparse convolution ops.

``csr_pointwise_conv2d`` and ``sparse_depthwise_conv2d`` have the signatures and semantics of
``torch.ops.sparseopt.<name>``: they rebuild the dense weight from the compressed one and call
:func:`torch.nn.functional.conv2d`. They are the test oracle and the fallback for devices
without a native kernel (registered as the ``CompositeExplicitAutograd`` kernel).
The formats are described in :mod:`sparseopt.nn.formats`.

The ``*_fused`` ops (sparseopt's inference modules) are the same convolutions followed by a clamp
to ``[act_min, act_max]`` (ReLU: ``[0, inf]``, ReLU6: ``[0, 6]``, none: ``[-inf, inf]``), with
the output in NCHW or, for ``channel_major``, in memory ``[C, N, H, W]`` returned as the
``[N, C, H, W]`` view (same values and shape, other strides).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# The compressed formats are production code (the layers compress with them); the oracle
# rebuilds the dense weight from them.
from .._domains import check_op_hyper
from ..nn.formats import _pair, csr_to_dense, taps_to_dense

__all__ = [
    "csr_pointwise_conv2d",
    "sparse_depthwise_conv2d",
    "csr_pointwise_conv2d_fused",
    "sparse_depthwise_conv2d_fused",
]


def _sum_of_nothing(
    x: torch.Tensor, shape: tuple[int, ...], bias: torch.Tensor | None
) -> torch.Tensor:
    """The output of a convolution with an empty input (empty batch, no input channel, a
    zero-sized map) or no output channel: every output element is a sum of no terms, so the
    bias (or zero). F.conv2d rejects several of these shapes; the native kernels define them."""
    out = x.new_zeros(shape)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def csr_pointwise_conv2d(
    x: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """1x1 stride-1 convolution by a CSR weight: ``out[n, o] = bias[o] + sum_k v[k] x[n, col[k]]``."""
    if x.dim() != 4:
        raise RuntimeError(
            f"sparseopt::csr_pointwise_conv2d: expected a 4-D input [N, C, H, W], got a {x.dim()}-D "
            f"tensor of shape {list(x.shape)}"
        )
    n, c, h, w = x.shape
    out_channels = row_ptr.numel() - 1
    if x.numel() == 0 or out_channels == 0:
        return _sum_of_nothing(x, (n, out_channels, h, w), bias)
    weight = csr_to_dense(row_ptr, col_idx, values, c)
    return F.conv2d(x, weight, bias).contiguous()


def sparse_depthwise_conv2d(
    x: torch.Tensor,
    tap_ptr: torch.Tensor,
    tap_idx: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: Sequence[int],
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
) -> torch.Tensor:
    """Depthwise convolution (one filter per channel) by per channel lists of nonzero taps."""
    if x.dim() != 4:
        raise RuntimeError(
            f"sparseopt::sparse_depthwise_conv2d: expected a 4-D input [N, C, H, W], got a "
            f"{x.dim()}-D tensor of shape {list(x.shape)}"
        )
    if x.numel() == 0:
        kh, kw = _pair(kernel_size, "kernel_size")
        sh, sw = _pair(stride, "stride")
        ph, pw = _pair(padding, "padding", 0)
        n, c, h, w = x.shape
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise RuntimeError(
                f"sparseopt::sparse_depthwise_conv2d: the padded input ({h + 2 * ph} x "
                f"{w + 2 * pw}) is smaller than the kernel ({kh} x {kw})"
            )
        out_shape = (n, c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        return _sum_of_nothing(x, out_shape, bias)
    weight = taps_to_dense(tap_ptr, tap_idx, values, kernel_size)
    return F.conv2d(
        x, weight, bias, stride=_pair(stride, "stride"), padding=_pair(padding, "padding", 0), groups=x.shape[1]
    ).contiguous()


def _check_act(op: str, act_min: float, act_max: float) -> None:
    check_op_hyper(op, act_min=act_min, act_max=act_max)
    if not act_min <= act_max:
        raise RuntimeError(f"sparseopt::{op}: need act_min <= act_max, got "
                           f"act_min={act_min}, act_max={act_max}")


def _in_layout(out: torch.Tensor, channel_major: bool) -> torch.Tensor:
    """``out`` (values and shape kept) in NCHW or in channel-major memory ``[C, N, H, W]``."""
    if channel_major:
        return out.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    return out.contiguous()


def csr_pointwise_conv2d_fused(
    x: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    act_min: float,
    act_max: float,
    channel_major: bool,
) -> torch.Tensor:
    """:func:`csr_pointwise_conv2d`, clamped to ``[act_min, act_max]``, in the chosen layout."""
    _check_act("csr_pointwise_conv2d_fused", act_min, act_max)
    out = csr_pointwise_conv2d(x, row_ptr, col_idx, values, bias)
    return _in_layout(out.clamp(act_min, act_max), channel_major)


def sparse_depthwise_conv2d_fused(
    x: torch.Tensor,
    tap_ptr: torch.Tensor,
    tap_idx: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    act_min: float,
    act_max: float,
    channel_major: bool,
) -> torch.Tensor:
    """:func:`sparse_depthwise_conv2d`, clamped to ``[act_min, act_max]``, in the chosen layout."""
    _check_act("sparse_depthwise_conv2d_fused", act_min, act_max)
    out = sparse_depthwise_conv2d(x, tap_ptr, tap_idx, values, bias, kernel_size, stride, padding)
    return _in_layout(out.clamp(act_min, act_max), channel_major)

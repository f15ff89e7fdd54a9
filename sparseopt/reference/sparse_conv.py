"""Pure-PyTorch references of the compressed sparse convolution ops, and the compressors.

``csr_pointwise_conv2d`` and ``sparse_depthwise_conv2d`` have the signatures and semantics of
``torch.ops.sparseopt.<name>``: they rebuild the dense weight from the compressed one and call
:func:`torch.nn.functional.conv2d`. They are the test oracle and the fallback for devices
without a native kernel (registered as the ``CompositeExplicitAutograd`` kernel).

Formats (all index tensors int32, on the input's device):

* pointwise, CSR over output channels: ``row_ptr[O + 1]``, ``col_idx[nnz]`` (input channel),
  ``values[nnz]``; output channel ``o`` owns entries ``row_ptr[o]:row_ptr[o + 1]``;
* depthwise, per channel list of nonzero taps: ``tap_ptr[C + 1]``, ``tap_idx[nnz]``
  (``ky * kw + kx``), ``values[nnz]``.

The ``*_fused`` ops (sparseopt's inference modules) are the same convolutions followed by a clamp
to ``[act_min, act_max]`` (ReLU: ``[0, inf]``, ReLU6: ``[0, 6]``, none: ``[-inf, inf]``), with
the output in NCHW or, for ``channel_major``, in memory ``[C, N, H, W]`` returned as the
``[N, C, H, W]`` view (same values and shape, other strides).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "csr_pointwise_conv2d",
    "sparse_depthwise_conv2d",
    "dense_to_csr",
    "dense_to_taps",
    "csr_to_dense",
    "taps_to_dense",
    "csr_pointwise_conv2d_fake",
    "sparse_depthwise_conv2d_fake",
    "csr_pointwise_conv2d_fused",
    "sparse_depthwise_conv2d_fused",
    "csr_pointwise_conv2d_fused_fake",
    "sparse_depthwise_conv2d_fused_fake",
]


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    if len(t) == 1:
        return (t[0], t[0])
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or two ints, got {v!r}")
    return t  # type: ignore[return-value]


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
        ph, pw = _pair(padding, "padding")
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
        x, weight, bias, stride=_pair(stride, "stride"), padding=_pair(padding, "padding"), groups=x.shape[1]
    ).contiguous()


def csr_pointwise_conv2d_fake(
    x: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fake (meta) kernel: the output's shape, dtype and device, no data."""
    torch._check(x.dim() == 4, lambda: f"csr_pointwise_conv2d: expected a 4-D input, got {x.dim()}-D")
    n, _, h, w = x.shape
    return x.new_empty((n, row_ptr.shape[0] - 1, h, w))


def sparse_depthwise_conv2d_fake(
    x: torch.Tensor,
    tap_ptr: torch.Tensor,
    tap_idx: torch.Tensor,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    kernel_size: Sequence[int],
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
) -> torch.Tensor:
    """Fake (meta) kernel: the output's shape, dtype and device, no data."""
    torch._check(x.dim() == 4, lambda: f"sparse_depthwise_conv2d: expected a 4-D input, got {x.dim()}-D")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    n, c, h, w = x.shape
    return x.new_empty((n, c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1))


def _check_act(op: str, act_min: float, act_max: float) -> None:
    if not act_min <= act_max:
        raise RuntimeError(f"sparseopt::{op}: need act_min <= act_max (neither NaN), got "
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


def _fake_in_layout(x: torch.Tensor, shape: tuple, channel_major: bool) -> torch.Tensor:
    if channel_major:
        n, c, h, w = shape
        return x.new_empty((c, n, h, w)).permute(1, 0, 2, 3)
    return x.new_empty(shape)


def csr_pointwise_conv2d_fused_fake(x, row_ptr, col_idx, values, bias, act_min, act_max,  # noqa: ANN001, ANN201
                                    channel_major):
    """Fake (meta) kernel: the output's shape, dtype, device and strides, no data."""
    out = csr_pointwise_conv2d_fake(x, row_ptr, col_idx, values, bias)
    return _fake_in_layout(x, tuple(out.shape), channel_major)


def sparse_depthwise_conv2d_fused_fake(x, tap_ptr, tap_idx, values, bias, kernel_size, stride,  # noqa: ANN001, ANN201
                                       padding, act_min, act_max, channel_major):
    """Fake (meta) kernel: the output's shape, dtype, device and strides, no data."""
    out = sparse_depthwise_conv2d_fake(x, tap_ptr, tap_idx, values, bias, kernel_size, stride, padding)
    return _fake_in_layout(x, tuple(out.shape), channel_major)


# ---- autograd formulas of the two ops (registered with torch.library.register_autograd) -------
# Gradients flow to x, values and bias; the index tensors are integer structure (no gradient).


def _rows_of(ptr: torch.Tensor, nnz: int) -> torch.Tensor:
    counts = (ptr[1:] - ptr[:-1]).long()
    return torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=ptr.device), counts, output_size=nnz)


def pointwise_setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, row_ptr, col_idx, values, bias = inputs
    ctx.save_for_backward(x, row_ptr, col_idx, values)
    ctx.has_bias = bias is not None


def pointwise_backward(ctx, grad):  # noqa: ANN001, ANN201
    x, row_ptr, col_idx, values = ctx.saved_tensors
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        weight = csr_to_dense(row_ptr, col_idx, values, x.shape[1]).flatten(1)
        grad_x = torch.einsum("oc,nohw->nchw", weight, grad)
    if ctx.needs_input_grad[3]:
        grad_w = torch.einsum("nohw,nchw->oc", grad, x)
        grad_values = grad_w[_rows_of(row_ptr, values.numel()), col_idx.long()]
    if ctx.has_bias and ctx.needs_input_grad[4]:
        grad_bias = grad.sum(dim=(0, 2, 3))
    return grad_x, None, None, grad_values, grad_bias


def depthwise_setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, tap_ptr, tap_idx, values, bias, kernel_size, stride, padding = inputs
    ctx.save_for_backward(x, tap_ptr, tap_idx, values)
    ctx.has_bias = bias is not None
    ctx.conv = (_pair(kernel_size, "kernel_size"), _pair(stride, "stride"), _pair(padding, "padding"))


def depthwise_backward(ctx, grad):  # noqa: ANN001, ANN201
    x, tap_ptr, tap_idx, values = ctx.saved_tensors
    kernel_size, stride, padding = ctx.conv
    channels = x.shape[1]
    grad_x = grad_values = grad_bias = None
    if ctx.needs_input_grad[0]:
        weight = taps_to_dense(tap_ptr, tap_idx, values, kernel_size)
        grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad, stride, padding, groups=channels)
    if ctx.needs_input_grad[3]:
        shape = (channels, 1, kernel_size[0], kernel_size[1])
        grad_w = torch.nn.grad.conv2d_weight(x, shape, grad, stride, padding, groups=channels)
        grad_values = grad_w.flatten(1)[_rows_of(tap_ptr, values.numel()), tap_idx.long()]
    if ctx.has_bias and ctx.needs_input_grad[4]:
        grad_bias = grad.sum(dim=(0, 2, 3))
    return grad_x, None, None, grad_values, grad_bias, None, None, None

"""Fake kernels and autograd formulas of the sparse conv ops (registered in
:mod:`sparseopt.ops`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..nn.formats import _pair, csr_to_dense, taps_to_dense


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
    ph, pw = _pair(padding, "padding", 0)
    n, c, h, w = x.shape
    return x.new_empty((n, c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1))


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
    ctx.conv = (_pair(kernel_size, "kernel_size"), _pair(stride, "stride"), _pair(padding, "padding", 0))


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

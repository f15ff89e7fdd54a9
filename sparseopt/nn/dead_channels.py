"""Dead-channel elimination in a fused inference model (a pass of :func:`fuse_for_inference`).

A depthwise channel whose filter has no nonzero tap outputs a constant, ``clamp(bias)``, whatever
its input. In a chain ``producer -> depthwise -> 1x1`` (consecutive modules of ``nn.Sequential``
containers, nested or not) such a channel costs three times for nothing:

* the 1x1 layer after it multiplies the constant by its weight column at every pixel: the pass
  adds ``weight[:, c] * constant`` to that layer's bias once and drops the column;
* the depthwise layer writes the constant plane: the pass drops the channel;
* the producer (a fused 1x1 or dense convolution) computes channel ``c`` only for the depthwise
  layer, which ignores it: the pass drops its output channel too.

With 90% of the 3x3 depthwise weights zeroed at random, 0.9^9 = 39% of the depthwise channels
are dead, and a 1x1 layer between two depthwise layers keeps about (1 - 0.39)^2 = 37% of its
work. The outputs of the model are those of the model before the pass up to rounding (the
constants are folded into the biases in float64); the activations between the three layers
have fewer channels. Without a fusable producer the depthwise layer keeps its channels and only
the 1x1 side is folded.
"""

from __future__ import annotations

import torch
from torch import nn

from .formats import csr_to_dense, taps_to_dense
from .inference import FusedConv2d, FusedDenseConv2d, FusedDepthwiseConv2d, FusedPointwiseConv2d

__all__ = ["drop_dead_channels"]


def _chain(seq: nn.Sequential) -> list[nn.Module]:
    """The modules a tensor passes through in ``seq``, nested ``nn.Sequential`` containers
    flattened and ``nn.Identity`` skipped: consecutive entries feed each other and nothing else."""
    out: list[nn.Module] = []
    for m in seq:
        if isinstance(m, nn.Sequential):
            out.extend(_chain(m))
        elif type(m) is not nn.Identity:
            out.append(m)
    return out


def _outermost_sequentials(module: nn.Module) -> list[nn.Sequential]:
    if isinstance(module, nn.Sequential):
        return [module]
    return [s for child in module.children() for s in _outermost_sequentials(child)]


def _adopt(module: FusedConv2d, new: FusedConv2d) -> None:
    """``module`` takes ``new``'s buffers and channel counts; the module itself stays in place
    (the model's structure, names and hooks are kept)."""
    module.in_channels, module.out_channels = new.in_channels, new.out_channels
    for name, buffer in new._buffers.items():
        setattr(module, name, buffer)


def _rebuild_pointwise(pw: FusedPointwiseConv2d, weight: torch.Tensor,
                       bias: torch.Tensor | None) -> None:
    """Give ``pw`` a new dense ``weight`` / ``bias`` (the CSR buffers and channel counts follow)."""
    _adopt(pw, FusedPointwiseConv2d(weight, bias, pw.stride, (pw.act_min, pw.act_max),
                                    pw.channel_major))


def _shrinkable(producer: nn.Module, channels: int) -> bool:
    """True when ``producer``'s output channels can be dropped (a fused 1x1 or a plain dense
    convolution, ``channels`` outputs)."""
    if isinstance(producer, FusedPointwiseConv2d):
        return producer.out_channels == channels
    return (isinstance(producer, FusedDenseConv2d) and producer.groups == 1
            and producer.weight.shape[0] == channels)


@torch.no_grad()
def _drop(producer: nn.Module | None, dw: FusedDepthwiseConv2d, pw: FusedPointwiseConv2d) -> bool:
    counts = dw.tap_ptr[1:] - dw.tap_ptr[:-1]
    dead = counts == 0
    n_dead = int(dead.sum())
    if n_dead == 0 or n_dead == dw.out_channels:  # nothing to drop / keep one real layer
        return False
    dtype = pw.values.dtype
    bias_dw = dw.bias if dw.bias is not None else torch.zeros(dw.out_channels, dtype=dtype)
    constant = bias_dw.double().clamp(dw.act_min, dw.act_max)  # each dead channel's output
    weight = csr_to_dense(pw.row_ptr, pw.col_idx, pw.values, pw.in_channels)[:, :, 0, 0]
    folded = weight[:, dead].double() @ constant[dead]
    base = pw.bias.double() if pw.bias is not None else torch.zeros_like(folded)
    bias = None if pw.bias is None and not bool(folded.any()) else (base + folded).to(dtype)
    live = ~dead
    if producer is None:  # the depthwise layer keeps its channels: zero the columns instead
        weight = weight.clone()
        weight[:, dead] = 0
        _rebuild_pointwise(pw, weight[:, :, None, None], bias)
        return True
    _rebuild_pointwise(pw, weight[:, live, None, None].contiguous(), bias)
    dw_weight = taps_to_dense(dw.tap_ptr, dw.tap_idx, dw.values, dw.kernel_size)[live]
    _adopt(dw, FusedDepthwiseConv2d(dw_weight, None if dw.bias is None else dw.bias[live],
                                    dw.stride, dw.padding, (dw.act_min, dw.act_max),
                                    dw.channel_major))
    if isinstance(producer, FusedPointwiseConv2d):
        w = csr_to_dense(producer.row_ptr, producer.col_idx, producer.values, producer.in_channels)
        _rebuild_pointwise(producer, w[live].contiguous(),
                           None if producer.bias is None else producer.bias[live])
    else:
        assert isinstance(producer, FusedDenseConv2d)
        producer.weight = producer.weight[live].contiguous()
        if producer.bias is not None:
            producer.bias = producer.bias[live].contiguous()
    return True


def drop_dead_channels(model: nn.Module) -> int:
    """Eliminate the dead depthwise channels of a fused model in place (see the module
    docstring); returns how many ``depthwise -> 1x1`` pairs changed."""
    changed = 0
    for seq in _outermost_sequentials(model):
        chain = _chain(seq)
        for i, dw in enumerate(chain[:-1]):
            pw = chain[i + 1]
            if not (isinstance(dw, FusedDepthwiseConv2d) and isinstance(pw, FusedPointwiseConv2d)
                    and pw.in_channels == dw.out_channels):
                continue
            producer = chain[i - 1] if i > 0 else None
            if producer is not None and not _shrinkable(producer, dw.in_channels):
                producer = None
            changed += _drop(producer, dw, pw)
        # modules with their own forward inside the chain may hold Sequentials of their own
        for m in chain:
            if not isinstance(m, (FusedDepthwiseConv2d, FusedPointwiseConv2d, FusedDenseConv2d)):
                changed += drop_dead_channels(m)
    return changed

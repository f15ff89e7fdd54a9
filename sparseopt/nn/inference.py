"""Fused inference modules: what :func:`sparseopt.nn.compress` returns for an eval-mode CPU model.

The conversion walks the model. In every ``nn.Sequential`` a convolution (a sparse layer or an
``nn.Conv2d``) absorbs the eval-mode ``BatchNorm2d`` right after it (folded into its weight and
bias: a per-output-channel scale, so zeros stay zeros) and the ``ReLU`` / ``ReLU6`` after that
(a clamp in the kernel's epilogue). Elsewhere (a module with its own forward) a sparse layer
becomes the matching inference module alone. The rest of the model is left as it is.

One activation layout runs through the sparse stages: channel-major (memory ``[C, N, H, W]``,
seen as the usual ``[N, C, H, W]`` tensor with other strides). The kernels read any input whose
``H x W`` planes are contiguous (the dense stem's NCHW output, or a channel-major one) without a
copy, and a 1x1 layer sees the whole batch as one ``[C, N*H*W]`` matrix, so a batch widens the
vectorised dim instead of repeating small 7x7 maps. Any module after the stages (pooling, the
classifier, a residual add) reads the same tensor through its strides: values and shapes are
those of the original model, only strides differ.

Then depthwise channels without a nonzero tap, whose output is a constant, are folded into the
next 1x1 layer's bias and dropped together with the output channel of the layer that feeds them
(:mod:`sparseopt.nn.dead_channels`; ``drop_dead_channels=False`` keeps them).

Inference only: the modules hold buffers (no parameters) and give no gradients.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .formats import dense_to_csr, dense_to_taps
from .sparse_conv import (DENSE_FALLBACK_DENSITY, SparseDepthwiseConv2d, SparsePointwiseConv2d,
                          _SparseConv2d, batchnorm_scale_shift)

__all__ = ["FusedConv2d", "FusedPointwiseConv2d", "FusedDepthwiseConv2d", "FusedDenseConv2d",
           "ChunkedSequential", "fuse_for_inference", "ACTIVATIONS"]

# Activation modules fused into a kernel epilogue, as (min, max) clamps.
ACTIVATIONS: dict[type, tuple[float, float]] = {nn.ReLU: (0.0, math.inf), nn.ReLU6: (0.0, 6.0)}
_NO_ACT = (-math.inf, math.inf)


def _act_of(m: nn.Module) -> tuple[float, float] | None:
    if type(m) in ACTIVATIONS:
        return ACTIVATIONS[type(m)]
    if type(m) is nn.Hardtanh:
        return (float(m.min_val), float(m.max_val))
    return None


class FusedConv2d(nn.Module):
    """Shared part: the (folded) bias buffer, the epilogue clamp, the output layout."""

    def __init__(self, bias: torch.Tensor | None, act: tuple[float, float],
                 channel_major: bool) -> None:
        super().__init__()
        self.register_buffer("bias", bias)
        self.act_min, self.act_max = float(act[0]), float(act[1])
        self.channel_major = channel_major

    def _act_repr(self) -> str:
        if (self.act_min, self.act_max) == _NO_ACT:
            return ""
        return f", clamp=[{self.act_min:g}, {self.act_max:g}]"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # unbatched [C, H, W], as nn.Conv2d takes it
            return self._run(x.unsqueeze(0)).squeeze(0)
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _args(self, x: torch.Tensor, *names: str) -> tuple[torch.Tensor, ...]:
        """``x`` in the weights' dtype, then the named buffers. Read from ``_buffers`` directly:
        at batch 1 a layer's kernel takes tens of microseconds, and ``nn.Module.__getattr__``
        per buffer plus an unneeded ``x.to`` were a quarter of a small layer's time."""
        buffers = self._buffers
        values = buffers["values"]
        assert values is not None
        if x.dtype != values.dtype:
            x = x.to(values.dtype)
        return (x, *(buffers[n] for n in names))  # type: ignore[misc]


class FusedPointwiseConv2d(FusedConv2d):
    """A 1x1 convolution from its CSR weight, with the epilogue clamp."""

    is_pointwise = True

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                 act: tuple[float, float], channel_major: bool = True) -> None:
        super().__init__(bias, act, channel_major)
        self.out_channels, self.in_channels = weight.shape[0], weight.shape[1]
        self.stride = tuple(stride)
        row_ptr, col_idx, values = dense_to_csr(weight)
        self.register_buffer("row_ptr", row_ptr)
        self.register_buffer("col_idx", col_idx)
        self.register_buffer("values", values)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = x[:, :, :: self.stride[0], :: self.stride[1]]
        return torch.ops.sparseopt.csr_pointwise_conv2d_fused.default(
            *self._args(x, "row_ptr", "col_idx", "values", "bias"),
            self.act_min, self.act_max, self.channel_major)

    def useful_flops(self, x: torch.Tensor) -> float:
        """2 flops per nonzero weight per output pixel (what the benchmark counts)."""
        n, _, h, w = x.shape
        h, w = -(-h // self.stride[0]), -(-w // self.stride[1])
        return 2.0 * self.values.numel() * n * h * w

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, nnz={self.values.numel()}, "
                f"stride={self.stride}" + self._act_repr())


class FusedDepthwiseConv2d(FusedConv2d):
    """A depthwise convolution from its per-channel tap lists, with the epilogue clamp."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                 padding: tuple[int, int], act: tuple[float, float],
                 channel_major: bool = True) -> None:
        super().__init__(bias, act, channel_major)
        self.in_channels = self.out_channels = weight.shape[0]
        self.kernel_size = (weight.shape[2], weight.shape[3])
        self.stride, self.padding = tuple(stride), tuple(padding)
        tap_ptr, tap_idx, values = dense_to_taps(weight)
        self.register_buffer("tap_ptr", tap_ptr)
        self.register_buffer("tap_idx", tap_idx)
        self.register_buffer("values", values)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.sparseopt.sparse_depthwise_conv2d_fused.default(
            *self._args(x, "tap_ptr", "tap_idx", "values", "bias"),
            list(self.kernel_size), list(self.stride), list(self.padding), self.act_min,
            self.act_max, self.channel_major)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, nnz={self.values.numel()}" + self._act_repr())


class FusedDenseConv2d(FusedConv2d):
    """A dense convolution (BatchNorm folded) followed by the clamp, for the layers that stay
    dense (the stem, or a sparse layer too dense for its kernel to win)."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None,
                 act: tuple[float, float]) -> None:
        super().__init__(bias, act, channel_major=False)
        self.register_buffer("weight", weight)
        self.stride, self.padding = tuple(conv.stride), conv.padding
        self.dilation, self.groups = tuple(conv.dilation), conv.groups

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                       self.groups)
        if (self.act_min, self.act_max) != _NO_ACT:
            out = out.clamp_(self.act_min, self.act_max)
        return out

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, "
                f"kernel_size={tuple(self.weight.shape[2:])}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}" + self._act_repr())


class ChunkedSequential(nn.Sequential):
    """An ``nn.Sequential`` of per-sample modules run on ``batch_chunk`` images at a time.

    A large batch makes every layer's activations large: at batch 16 one MobileNetV1 activation
    at 112x112 is 51 MB, so each layer streams through memory and each fresh output is paged
    in. A few images at a time keep a layer's input and output in the caches; the 1x1 kernels
    still see ``chunk * H * W`` columns. Every module inside treats images independently (in eval
    mode), so the result is the same as one pass over the batch."""

    batch_chunk: int = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.dim() != 4 or x.shape[0] <= self.batch_chunk:
            return super().forward(x)
        return torch.cat([super(ChunkedSequential, self).forward(c)
                          for c in x.split(self.batch_chunk)])


# Modules that treat the images of a batch independently in eval mode (safe to chunk).
_PER_SAMPLE = (FusedConv2d, nn.Sequential, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Identity,
               nn.Dropout, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Conv2d)


def _chunk_sequentials(module: nn.Module, batch_chunk: int) -> None:
    """Turn each outermost ``nn.Sequential`` made of per-sample modules and holding a fused
    sparse stage into a :class:`ChunkedSequential`."""
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        # BatchNorm and Dropout are per-sample only in eval mode.
        per_sample = all(isinstance(m, _PER_SAMPLE) and not (
            isinstance(m, (nn.BatchNorm2d, nn.Dropout)) and m.training) for m in child.modules())
        has_sparse = any(isinstance(m, (FusedPointwiseConv2d, FusedDepthwiseConv2d)) for m in child.modules())
        if per_sample and has_sparse and type(child) is nn.Sequential:
            chunked = ChunkedSequential(OrderedDict(child._modules))  # names kept
            chunked.batch_chunk = batch_chunk
            module._modules[name] = chunked
        else:
            _chunk_sequentials(child, batch_chunk)


# ---- conversion ----------------------------------------------------------------------------------
def _foldable_bn(bn: nn.Module, channels: int) -> bool:
    return (type(bn) is nn.BatchNorm2d and bn.num_features == channels and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


@torch.no_grad()
def _folded(weight: torch.Tensor, bias: torch.Tensor | None,
            bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) with ``bn`` folded in (exact zeros stay zero), as new tensors."""
    weight = weight.detach().clone()
    bias = None if bias is None else bias.detach().clone()
    if bn is None:
        return weight, bias
    scale, shift = batchnorm_scale_shift(bn)
    weight.mul_(scale.reshape(-1, 1, 1, 1).to(weight.dtype))
    b = shift if bias is None else bias * scale + shift
    return weight, b.to(weight.dtype).detach()


def _stage(conv: nn.Module, bn: nn.BatchNorm2d | None, act: tuple[float, float] | None,
           channel_major: bool) -> nn.Module | None:
    """The fused inference module of ``conv`` (+ ``bn``, + ``act``), or None if it has none."""
    act = act or _NO_ACT
    if isinstance(conv, _SparseConv2d):
        weight, bias = _folded(conv.weight * conv.mask, conv.bias, bn)
        threshold = conv._dense_threshold
        kind = "pointwise" if isinstance(conv, SparsePointwiseConv2d) else "depthwise"
        threshold = DENSE_FALLBACK_DENSITY[kind] if threshold is None else threshold
        density = float((weight != 0).sum()) / max(weight.numel(), 1)
        if weight.dtype in (torch.float32, torch.float64) and density <= threshold:
            if isinstance(conv, SparsePointwiseConv2d):
                return FusedPointwiseConv2d(weight, bias, conv.stride, act, channel_major)
            assert isinstance(conv, SparseDepthwiseConv2d)
            return FusedDepthwiseConv2d(weight, bias, conv.stride, conv.padding, act, channel_major)
        dense = conv.to_dense()
        return FusedDenseConv2d(dense, weight, bias, act)
    if type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and (bn is not None or act != _NO_ACT):
        weight, bias = _folded(conv.weight, conv.bias, bn)
        return FusedDenseConv2d(conv, weight, bias, act)
    return None


def _fuse_children(module: nn.Module, channel_major: bool) -> None:
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        kept: list[nn.Module] = []
        i = 0
        while i < len(names):
            m = module._modules[names[i]]
            j = i + 1
            bn = act = None
            if isinstance(m, (nn.Conv2d, _SparseConv2d)):
                nxt = module._modules[names[j]] if j < len(names) else None
                if nxt is not None and _foldable_bn(nxt, m.out_channels):
                    bn, j = nxt, j + 1
                while j < len(names) and type(module._modules[names[j]]) is nn.Identity:
                    j += 1  # what fold_batchnorm left behind
                nxt = module._modules[names[j]] if j < len(names) else None
                if nxt is not None and _act_of(nxt) is not None:
                    act, j = _act_of(nxt), j + 1
                stage = _stage(m, bn, act, channel_major)
                if stage is not None:
                    kept.append(stage)
                    i = j
                    continue
                j = i + 1
            _fuse_children(m, channel_major)
            kept.append(m)
            i = j
        module._modules.clear()
        for k, m in enumerate(kept):
            module._modules[str(k)] = m
        return
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        if isinstance(child, _SparseConv2d):
            stage = _stage(child, None, None, channel_major)
            module._modules[name] = stage if stage is not None else child
        else:
            _fuse_children(child, channel_major)


def fuse_for_inference(model: nn.Module, channel_major: bool = True,
                       batch_chunk: int | None = 2, drop_dead_channels: bool = True) -> nn.Module:
    """A fused inference copy of the eval-mode ``model`` (see the module docstring); ``model``
    itself is not changed. The BatchNorms folded are those right after a convolution in an
    ``nn.Sequential`` with running statistics; everything else keeps its module. With
    ``drop_dead_channels``, depthwise channels without a nonzero tap are folded away
    (:mod:`sparseopt.nn.dead_channels`: the activations between the layers around them get
    fewer channels). With ``batch_chunk``, the outermost ``nn.Sequential`` containers of
    per-sample modules that hold sparse stages run that many images at a time
    (:class:`ChunkedSequential`; None: the whole batch)."""
    if model.training:
        raise RuntimeError("fuse_for_inference: the model is in training mode; call model.eval() "
                           "first (BatchNorm is folded with its running statistics)")
    fused = copy.deepcopy(model)
    if isinstance(fused, (nn.Conv2d, _SparseConv2d)):  # a bare layer: fuse it as a 1-element chain
        holder = nn.Sequential(fused)
        _fuse_children(holder, channel_major)
        fused = holder[0]
    else:
        _fuse_children(fused, channel_major)
        if drop_dead_channels:
            from .dead_channels import drop_dead_channels as drop

            drop(fused)
        if batch_chunk is not None:
            _chunk_sequentials(fused, batch_chunk)
    return fused.eval().requires_grad_(False)

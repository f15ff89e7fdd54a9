"""Sparse-masked pointwise (1x1) and depthwise convolutions.

Two modes per layer:

* **training** (default): a dense ``weight`` parameter and a boolean ``mask`` buffer; the forward
  is ``F.conv2d(x, weight * mask, bias)``, so the weight's gradient is exactly zero where the mask
  is zero and the effective weight ``weight * mask`` stays zero there under any optimizer. (The
  raw ``weight`` under a False mask can still move when the optimizer carries state from before
  the pruning: momentum, Adam's moments, RDA/iRDA's gradient average; it has no effect on the
  output.) After an optimizer that creates new exact zeros (``sparseopt.IRDA``, ``ProxSGD``,
  ...), :meth:`update_mask` freezes them: the new mask is ``old mask & (weight != 0)`` (a pruned
  weight is never revived) and the raw weight is zeroed where the mask is False.
* **compressed inference** (:meth:`compress`): the masked weight is stored compressed (CSR over
  output channels for pointwise, per channel list of nonzero taps for depthwise) and run by the
  native ops ``torch.ops.sparseopt.csr_pointwise_conv2d`` / ``sparse_depthwise_conv2d`` (CPU:
  OpenMP + AVX-512, CUDA kernels, pure-PyTorch fallback elsewhere). When the weight is too dense
  for the sparse kernel to win (density above :data:`DENSE_FALLBACK_DENSITY`, measured by
  ``benchmarks/bench_conv.py``), the compressed layer runs the dense convolution instead.

For inference on the CPU, :func:`compress` of an eval-mode model also returns a fused copy
(:mod:`sparseopt.nn.inference`: BatchNorm folded, ReLU/ReLU6 in the kernels' epilogues, one
channel-major activation layout, a large batch run a few images at a time).

``state_dict`` holds the dense ``weight``, ``bias`` and ``mask`` only; the compressed buffers are
rebuilt from them (a compressed layer recompresses itself when its weight or mask change). Under
``torch.compile`` / ``torch.export`` (``torch.compiler.is_compiling()``) that staleness check is
skipped and the compressed buffers are used as they are: call :meth:`compress` again after
changing the weights of a compiled or exported compressed model.

Under ``torch.autocast`` the layers do what ``nn.Conv2d`` does: the input, weight and bias (those
floating-point and not float64) are cast to the autocast dtype and the output has that dtype. A
compressed layer whose autocast dtype has no native sparse kernel (float16, bfloat16) runs the
dense convolution on the cast masked weight, as a float16/bfloat16 compressed layer always does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .formats import _is_int, _pair, dense_to_csr, dense_to_taps

__all__ = [
    "SparsePointwiseConv2d",
    "SparseDepthwiseConv2d",
    "DENSE_FALLBACK_DENSITY",
    "sparsify",
    "compress",
    "decompress",
    "update_masks",
    "fold_batchnorm",
    "is_pointwise_eligible",
    "is_depthwise_eligible",
]

# A compressed layer whose fraction of nonzero weights is above this runs the dense F.conv2d on
# the masked weight instead of the sparse kernel. Measured on the CPU (2 cores, AMD EPYC Zen 4) by
# benchmarks/bench_conv.py over every MobileNetV1 layer shape at batch 1 and 32 (see
# benchmarks/RESULTS_conv.md): at 70% zeros (density 0.3) the sparse pointwise kernel wins on all
# 18 cases and the depthwise one on 17 of 18; at 50% zeros (density 0.5) both lose on 3-4 of 9
# shapes per batch (down to 0.4-0.8x), at 0% on most. The threshold sits just above density 0.3.
# Formats the native kernels do not run (float16, bfloat16) always take the dense path.
DENSE_FALLBACK_DENSITY: dict[str, float] = {"pointwise": 0.35, "depthwise": 0.35}

_NATIVE_DTYPES = (torch.float32, torch.float64)


def _int(v: Any, name: str, minimum: int, layer: str) -> int:
    if not _is_int(v) or int(v) < minimum:
        raise ValueError(f"{layer}: {name} must be an int >= {minimum}, got {v!r}")
    return int(v)


def _check_dtype(dtype: Any, layer: str) -> None:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"{layer}: dtype must be a floating-point dtype (float32, float64, "
                         f"float16 or bfloat16), got {dtype}")


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype when ``torch.autocast`` is on for ``device``'s type, else None."""
    if not torch.amp.is_autocast_available(device.type):
        return None
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _autocast(t: torch.Tensor | None, dtype: torch.dtype | None) -> torch.Tensor | None:
    """``t`` cast as autocast casts a convolution's arguments: floating-point tensors other than
    float64 go to ``dtype``; everything else (and everything when ``dtype`` is None) is kept."""
    if t is None or dtype is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


_Layer = TypeVar("_Layer", bound=nn.Module)


def _copy_layer(src: nn.Module, dst: _Layer, weight: torch.Tensor) -> _Layer:
    """The dense <-> sparse conversions' copy: ``weight`` and ``src``'s bias into ``dst``, with
    ``src``'s ``requires_grad`` (a frozen layer stays frozen) and train/eval mode; a sparse
    ``dst`` then derives its mask from the copied weight."""
    with torch.no_grad():
        dst.weight.copy_(weight)
        if src.bias is not None:
            dst.bias.copy_(src.bias)
        if isinstance(dst, _SparseConv2d):
            dst.update_mask()
    dst.weight.requires_grad_(src.weight.requires_grad)
    if src.bias is not None:
        dst.bias.requires_grad_(src.bias.requires_grad)
    dst.train(src.training)
    return dst


def _suggest_channels_last(x: torch.Tensor) -> bool:
    """True where ``nn.Conv2d`` would return a channels_last output for the 4-D input ``x``."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _describe(t: Any) -> str:
    if not isinstance(t, torch.Tensor):
        return f"a {type(t).__name__}"
    return f"a {t.dtype} tensor of shape {list(t.shape)} on {t.device}"


class _SparseConv2d(nn.Module):
    """Shared machinery: weight + mask, input checks, compression, state_dict checks."""

    _kind: str = ""
    weight: nn.Parameter
    bias: nn.Parameter | None
    mask: torch.Tensor

    def __init__(self, weight_shape: tuple[int, ...], out_channels: int, bias: bool,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(weight_shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("mask", torch.ones(weight_shape, dtype=torch.bool, device=device))
        # Compressed form (not in the state_dict: rebuilt from weight * mask).
        self.register_buffer("_ptr", None, persistent=False)
        self.register_buffer("_idx", None, persistent=False)
        self.register_buffer("_values", None, persistent=False)
        self.register_buffer("_dense", None, persistent=False)
        self._compressed = False
        self._dense_threshold: float | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._warned_no_weight_grad = False  # the compressed-forward-in-training warning, once
        self.reset_parameters()

    # ---- parameters and mask ---------------------------------------------------------------
    def reset_parameters(self) -> None:
        """The initialisation of ``nn.Conv2d`` (Kaiming uniform, a = sqrt(5)); the mask is kept."""
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / fan_in ** 0.5 if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    @torch.no_grad()
    def update_mask(self) -> torch.Tensor:
        """Freeze the weight's exact zeros: ``mask = mask & (weight != 0)``, then zero the raw
        weight where the mask is False; returns the mask.

        A weight pruned before stays pruned even if the optimizer moved its raw value since
        (momentum, Adam's moments or RDA/iRDA's gradient average from before the pruning keep
        moving it; the forward never sees it), and after the call ``weight`` itself holds the
        zeros, so :meth:`sparsity` and ``sparseopt.sparsity(layer)`` agree. To let pruned
        weights train again, set their mask entries (e.g. ``layer.mask.fill_(True)``); one still
        zero at the next call is pruned again."""
        self._check_mask(self.mask, "mask")
        self.mask.logical_and_(self.weight != 0)
        self.weight.masked_fill_(~self.mask, 0)
        return self.mask

    def masked_weight(self) -> torch.Tensor:
        """``weight * mask`` (differentiable with respect to ``weight``)."""
        return self.weight * self.mask

    def density(self) -> float:
        """Fraction of nonzero entries of ``weight * mask``."""
        with torch.no_grad():
            return float(((self.weight != 0) & self.mask).sum()) / max(self.weight.numel(), 1)

    def sparsity(self) -> float:
        """Fraction of zero entries of ``weight * mask``."""
        return 1.0 - self.density()

    def _check_mask(self, mask: Any, what: str) -> None:
        """The mask must be a bool tensor of the weight's shape on the weight's device (metadata
        only: no synchronisation)."""
        w = self.weight
        ok = (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
              and mask.shape == w.shape and mask.device == w.device)
        if not ok:
            err = TypeError if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool else (
                ValueError if mask.shape != w.shape else RuntimeError)
            raise err(
                f"{type(self).__name__}: {what} must be a torch.bool tensor of the weight's shape "
                f"{list(w.shape)} on {w.device}, got {_describe(mask)}; to set it from a float "
                "or 0/1 tensor m, use layer.mask.copy_(m != 0), or update_mask() to take the "
                "weight's nonzeros"
            )

    def __setattr__(self, name: str, value: Any) -> None:
        # A mask of another shape would broadcast silently in weight * mask (a [kh, kw] mask
        # applied to every channel of a depthwise weight); check it before it replaces the old.
        if name == "mask" and "weight" in self.__dict__.get("_parameters", {}):
            self._check_mask(value, "the mask assigned")
        super().__setattr__(name, value)

    # ---- input checks ------------------------------------------------------------------------
    def _check_spatial(self, x: torch.Tensor) -> None:
        """The input's H x W (its last two dimensions, batched or not): not empty, and
        (depthwise) no smaller than the kernel once padded."""
        if x.shape[-2] == 0 or x.shape[-1] == 0:
            raise ValueError(
                f"{type(self).__name__}: expected a non-empty H x W map, got an input of shape "
                f"{list(x.shape)}"
            )

    def _check_input(self, x: torch.Tensor, cast: torch.dtype | None = None) -> None:
        """``cast``: the autocast dtype (None outside autocast); input and weight are compared
        after autocast's cast."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor input, got {type(x).__name__}")
        if x.dim() not in (3, 4):
            raise ValueError(
                f"{name}: expected a 4-D input [N, C, H, W], got a {x.dim()}-D tensor of shape "
                f"{list(x.shape)} (an unbatched 3-D input [C, H, W] is accepted too, as "
                "nn.Conv2d accepts it)"
            )
        if x.shape[-3] != self.in_channels:
            raise ValueError(
                f"{name}: expected {self.in_channels} input channels, got {x.shape[-3]} "
                f"(input shape {list(x.shape)})"
            )
        if cast is None and x.dtype != self.weight.dtype:
            raise TypeError(f"{name}: expected a {self.weight.dtype} input (the weight's dtype), got {x.dtype}")
        if cast is not None:
            xd, wd = _autocast(x, cast).dtype, _autocast(self.weight, cast).dtype
            if xd != wd:
                raise TypeError(
                    f"{name}: under torch.autocast({x.device.type!r}, dtype={cast}) the input "
                    f"({x.dtype}, cast to {xd}) and the weight ({self.weight.dtype}, cast to "
                    f"{wd}) have different dtypes"
                )
        if x.device != self.weight.device:
            raise RuntimeError(
                f"{name}: expected an input on {self.weight.device} (the weight's device), got {x.device}"
            )
        self._check_spatial(x)

    # ---- compression -----------------------------------------------------------------------
    @property
    def compressed(self) -> bool:
        """True after :meth:`compress` (until :meth:`decompress`)."""
        return self._compressed

    @property
    def kernel(self) -> str:
        """Which kernel the forward runs: ``"masked_dense"`` (training mode), ``"sparse"`` or
        ``"dense"`` (compressed, dense fallback)."""
        if not self._compressed:
            return "masked_dense"
        self._refresh()
        return "dense" if self._dense is not None else "sparse"

    def _make_stamp(self) -> tuple[Any, ...]:
        w, m = self.weight, self.mask
        return (w._version, m._version, w.data_ptr(), m.data_ptr(), w.dtype, w.device,
                self._dense_threshold)

    def _build(self) -> None:
        # Built as normal tensors even under torch.inference_mode(): inference tensors could not
        # be saved for backward by a later forward that differentiates with respect to the input.
        # (inference_mode(False) turns grad mode on, so no_grad goes inside it.)
        with torch.inference_mode(False), torch.no_grad():
            self._build_buffers()

    def _build_buffers(self) -> None:
        if self.weight.device.type == "meta":
            raise RuntimeError(
                f"{type(self).__name__}: cannot compress a layer on the meta device (its weight "
                "has no values); materialise it first, e.g. to_empty(device=...) and "
                "load_state_dict(...)"
            )
        self._check_mask(self.mask, "mask")
        w = (self.weight * self.mask).detach()
        threshold = self._dense_threshold
        if threshold is None:
            threshold = DENSE_FALLBACK_DENSITY[self._kind]
        density = float((w != 0).sum()) / max(w.numel(), 1)
        if density > threshold or w.dtype not in _NATIVE_DTYPES:
            self._dense = w.clone()
            self._ptr = self._idx = self._values = None
        else:
            self._dense = None
            self._ptr, self._idx, self._values = self._compress_weight(w)
        self._stamp = self._make_stamp()

    def _refresh(self) -> None:
        # Under torch.compile / torch.export the compressed buffers are used as they are: the
        # stamp (data_ptr, _version) cannot be traced, and rebuilding reads the weight on the
        # host. Call compress() again after changing the weights of a compiled model.
        if torch.compiler.is_compiling():
            return
        if self._stamp != self._make_stamp():
            self._build()

    def compress(self, dense_threshold: float | None = None) -> _SparseConv2d:
        """Switch to compressed inference: store ``weight * mask`` compressed and run the sparse
        kernel (or the dense convolution when the density exceeds ``dense_threshold``, default
        :data:`DENSE_FALLBACK_DENSITY`). The forward no longer produces weight gradients (it
        still differentiates with respect to the input); :meth:`decompress` returns to training.
        A compressed forward in training mode with grad enabled and a weight that requires grad
        warns once per layer (``UserWarning``) that it trains nothing. The compressed buffers
        are normal tensors even when built under ``torch.inference_mode()``. Returns ``self``.

        In eager mode a compressed layer rebuilds its compressed form when its weight or mask
        change. Under ``torch.compile`` / ``torch.export`` it uses the buffers as they are: call
        ``compress()`` again after changing the weights of a compiled or exported model."""
        if dense_threshold is not None and (
            isinstance(dense_threshold, bool) or not isinstance(dense_threshold, (int, float))
            or not 0.0 <= dense_threshold <= 1.0
        ):
            raise ValueError(f"dense_threshold must be in [0, 1], got {dense_threshold}")
        # Nothing changes unless the compressed form was built: a failure leaves the layer in
        # the mode it was in.
        old = self._dense_threshold
        self._dense_threshold = dense_threshold
        try:
            self._build()
        except BaseException:
            self._dense_threshold = old
            raise
        self._compressed = True
        return self

    def decompress(self) -> _SparseConv2d:
        """Back to the training mode (masked dense convolution); drops the compressed buffers."""
        self._compressed = False
        self._ptr = self._idx = self._values = self._dense = None
        self._stamp = None
        return self

    # ---- state_dict --------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,  # noqa: ANN001
                              unexpected_keys, error_msgs) -> None:
        # Every check comes before the first copy, so a rejected state_dict leaves the layer's
        # weight, bias and mask as they were (torch's loader would copy the entries that fit
        # and only then report those that do not). Missing and unexpected keys are left to
        # torch: whether they are errors depends on load_state_dict's `strict`, which this
        # method is not told (torch always passes strict=True here).
        name = type(self).__name__
        expected = {"weight": list(self.weight.shape), "mask": list(self.weight.shape)}
        if self.bias is not None:
            expected["bias"] = list(self.bias.shape)
        for entry, shape in expected.items():
            key = prefix + entry
            if key not in state_dict:
                continue
            value = state_dict[key]
            if not isinstance(value, torch.Tensor) or list(value.shape) != shape:
                got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                what = "the weight's shape" if entry == "mask" else (
                    f"in_channels={self.in_channels}, out_channels={self.out_channels}")
                raise RuntimeError(
                    f"{name}: {entry} in the state_dict ({key}) has shape {got}, expected "
                    f"{shape} ({what})"
                )
            if entry != "mask" and not value.is_floating_point():
                raise RuntimeError(
                    f"{name}: {entry} in the state_dict ({key}) has dtype {value.dtype}, expected "
                    "a floating-point tensor"
                )
        key = prefix + "mask"
        if key in state_dict and state_dict[key].dtype != torch.bool:
            mask = state_dict[key]
            if mask.is_complex():
                raise RuntimeError(
                    f"{name}: mask in the state_dict ({key}) has dtype {mask.dtype}; expected bool "
                    "(or an integer or floating-point tensor of 0s and 1s)"
                )
            if mask.device.type != "meta" and not bool(((mask == 0) | (mask == 1)).all()):
                raise RuntimeError(
                    f"{name}: mask in the state_dict ({key}) holds values other than 0 and 1 "
                    f"({mask.dtype}); a mask is bool (or a tensor of 0s and 1s), not a soft mask"
                )
            state_dict[key] = mask != 0
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ---- hooks for the subclasses --------------------------------------------------------------
    def _compress_weight(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_mask(self.mask, "mask")  # replaced behind __setattr__'s back (mask.data = ...)
        cast = _autocast_dtype(x.device) if isinstance(x, torch.Tensor) else None
        self._check_input(x, cast)
        if x.dim() == 3:  # unbatched [C, H, W]: as nn.Conv2d runs it
            return self._forward(x.unsqueeze(0), cast).squeeze(0)
        return self._forward(x, cast)

    def _warn_if_training_compressed(self) -> None:
        """One UserWarning per layer when a compressed forward runs where weight gradients are
        expected (training mode, grad enabled, weight requiring grad): it produces none."""
        if torch.compiler.is_compiling():
            return
        if (self.training and torch.is_grad_enabled() and self.weight.requires_grad
                and not getattr(self, "_warned_no_weight_grad", False)):
            self._warned_no_weight_grad = True
            warnings.warn(
                f"{type(self).__name__}: the layer is compressed and in training mode, but the "
                "compressed forward gives no weight gradients (only input gradients); call "
                "decompress() to train it (or eval() / torch.no_grad() for inference)",
                UserWarning, stacklevel=3,
            )

    def _forward(self, x: torch.Tensor, cast: torch.dtype | None) -> torch.Tensor:
        """The 4-D input ``x`` already checked; ``cast``: the autocast dtype or None."""
        if not self._compressed:
            # Under autocast, cast as nn.Conv2d's autocast does (F.conv2d would cast again: a
            # no-op); the casts are differentiable, so the fp32 weight gets its gradient.
            return self._conv(_autocast(x, cast), _autocast(self.weight * self.mask, cast),
                              _autocast(self.bias, cast))
        self._warn_if_training_compressed()
        self._refresh()
        if self._dense is not None:
            return self._conv(_autocast(x, cast), _autocast(self._dense, cast),
                              _autocast(self.bias, cast))
        if cast is not None and _autocast(self._values, cast).dtype != self._values.dtype:
            # No native sparse kernel in the autocast dtype: the dense convolution on the cast
            # masked weight, as a float16/bfloat16 compressed layer always runs.
            with torch.no_grad():
                w = (self.weight * self.mask).to(cast)
            return self._conv(x.to(cast), w, _autocast(self.bias, cast))
        out = self._sparse(_autocast(x, cast))
        if _suggest_channels_last(x):  # the memory format nn.Conv2d (and the masked path) gives
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def to_dense(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with the masked weight (a copy) and the bias."""
        raise NotImplementedError


class SparsePointwiseConv2d(_SparseConv2d):
    """A 1x1 convolution with a sparsity mask (``weight [out_ch, in_ch, 1, 1]``).

    ``stride`` (default 1) subsamples the input, as ``nn.Conv2d(kernel_size=1, stride=s)`` does
    (ResNet projection shortcuts); the compressed kernel itself is 1x1 stride 1.
    """

    _kind = "pointwise"

    def __init__(self, in_ch: int, out_ch: int, bias: bool = True, stride: int | Sequence[int] = 1,
                 device: Any = None, dtype: Any = None) -> None:
        name = "SparsePointwiseConv2d"
        if not (_is_int(in_ch) and _is_int(out_ch) and int(in_ch) >= 1 and int(out_ch) >= 1):
            raise ValueError(
                f"{name}: in_ch and out_ch must be >= 1 (ints), got {in_ch!r}, {out_ch!r}"
            )
        self.in_channels = int(in_ch)
        self.out_channels = int(out_ch)
        self.stride = _pair(stride, "stride", 1, name)
        _check_dtype(dtype, name)
        super().__init__((self.out_channels, self.in_channels, 1, 1), self.out_channels, bias,
                         device, dtype)

    def _compress_weight(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return dense_to_csr(w)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, stride=self.stride)

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = x[:, :, :: self.stride[0], :: self.stride[1]]
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.sparseopt.csr_pointwise_conv2d(x, self._ptr, self._idx, self._values, bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d) -> SparsePointwiseConv2d:
        """A sparse layer with ``conv``'s weight and bias (copied); the mask marks its nonzeros."""
        reason = _pointwise_ineligible(conv)
        if reason is not None:
            raise ValueError(f"SparsePointwiseConv2d.from_dense: {reason}")
        layer = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None,
                    stride=conv.stride, device=conv.weight.device, dtype=conv.weight.dtype)
        return _copy_layer(conv, layer, conv.weight)

    def to_dense(self) -> nn.Conv2d:
        conv = nn.Conv2d(self.in_channels, self.out_channels, 1, stride=self.stride,
                         bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        return _copy_layer(self, conv, self.weight * self.mask)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}"
        if self.stride != (1, 1):
            s += f", stride={self.stride}"
        return s + f", compressed={self._compressed}"


class SparseDepthwiseConv2d(_SparseConv2d):
    """A depthwise convolution (one ``kh x kw`` filter per channel, ``groups = channels``) with a
    sparsity mask (``weight [channels, 1, kh, kw]``); zero padding, dilation 1."""

    _kind = "depthwise"

    def __init__(self, channels: int, kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        name = "SparseDepthwiseConv2d"
        self.in_channels = self.out_channels = _int(channels, "channels", 1, name)
        try:
            self.kernel_size = _pair(kernel_size, "kernel_size", 1, name)
            self.stride = _pair(stride, "stride", 1, name)
            self.padding = _pair(padding, "padding", 0, name)
        except ValueError:
            raise ValueError(
                f"{name}: need kernel_size >= 1, stride >= 1, padding >= 0, each an int or a pair "
                f"of ints; got kernel_size={kernel_size!r}, stride={stride!r}, padding={padding!r}"
            ) from None
        _check_dtype(dtype, name)
        super().__init__((self.in_channels, 1) + self.kernel_size, self.in_channels, bias, device,
                         dtype)

    def _compress_weight(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return dense_to_taps(w)

    def _check_spatial(self, x: torch.Tensor) -> None:
        super()._check_spatial(x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        h, w = x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw
        if h < kh or w < kw:
            raise ValueError(
                f"SparseDepthwiseConv2d: the padded input ({h} x {w}) is smaller than the kernel "
                f"({kh} x {kw}); input shape {list(x.shape)}, padding {self.padding}"
            )

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding,
                        groups=self.in_channels)

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.sparseopt.sparse_depthwise_conv2d(
            x, self._ptr, self._idx, self._values, bias, list(self.kernel_size), list(self.stride),
            list(self.padding)
        )

    @classmethod
    def from_dense(cls, conv: nn.Conv2d) -> SparseDepthwiseConv2d:
        """A sparse layer with ``conv``'s weight and bias (copied); the mask marks its nonzeros."""
        reason = _depthwise_ineligible(conv)
        if reason is not None:
            raise ValueError(f"SparseDepthwiseConv2d.from_dense: {reason}")
        layer = cls(conv.in_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        return _copy_layer(conv, layer, conv.weight)

    def to_dense(self) -> nn.Conv2d:
        conv = nn.Conv2d(self.in_channels, self.in_channels, self.kernel_size, stride=self.stride,
                         padding=self.padding, groups=self.in_channels, bias=self.bias is not None,
                         device=self.weight.device, dtype=self.weight.dtype)
        return _copy_layer(self, conv, self.weight * self.mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}, compressed={self._compressed}")


# ---- model-level helpers -------------------------------------------------------------------------
def _common_ineligible(conv: nn.Module) -> str | None:
    if not isinstance(conv, nn.Conv2d):
        return f"expected an nn.Conv2d, got {type(conv).__name__}"
    if conv.padding_mode != "zeros":
        return f"padding_mode must be 'zeros', got {conv.padding_mode!r}"
    if isinstance(conv.padding, str):
        return f"padding must be numeric, got {conv.padding!r}"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation must be 1, got {tuple(conv.dilation)}"
    return None


def _pointwise_ineligible(conv: nn.Module) -> str | None:
    r = _common_ineligible(conv)
    if r is not None:
        return r
    if tuple(conv.kernel_size) != (1, 1):
        return f"expected a 1x1 kernel, got {tuple(conv.kernel_size)}"
    if conv.groups != 1:
        return f"expected groups=1, got {conv.groups}"
    if tuple(conv.padding) != (0, 0):
        return f"expected padding 0, got {tuple(conv.padding)}"
    return None


def _depthwise_ineligible(conv: nn.Module) -> str | None:
    r = _common_ineligible(conv)
    if r is not None:
        return r
    if not (conv.groups == conv.in_channels == conv.out_channels):
        return (f"expected groups == in_channels == out_channels (depthwise), got groups={conv.groups}, "
                f"in_channels={conv.in_channels}, out_channels={conv.out_channels}")
    return None


def is_pointwise_eligible(conv: nn.Module) -> bool:
    """True for an ``nn.Conv2d`` with a 1x1 kernel, groups 1, padding 0, dilation 1 (any stride)."""
    return _pointwise_ineligible(conv) is None


def is_depthwise_eligible(conv: nn.Module) -> bool:
    """True for a depthwise ``nn.Conv2d`` (groups == in == out channels), zero padding, dilation 1."""
    return _depthwise_ineligible(conv) is None


def sparsify(model: nn.Module, pointwise: bool = True, depthwise: bool = True) -> nn.Module:
    """Replace, in place, every eligible ``nn.Conv2d`` of ``model`` by its sparse layer (weights
    copied, mask = nonzeros of the weight; each parameter keeps its ``requires_grad`` and the
    layer its train/eval mode) and return ``model``. Eligible: 1x1 convolutions (groups 1,
    padding 0; any stride) and depthwise convolutions (groups = channels)."""
    if isinstance(model, nn.Conv2d):
        raise TypeError("sparsify: pass the parent module; a bare nn.Conv2d cannot be replaced in "
                        "place (use SparsePointwiseConv2d.from_dense / SparseDepthwiseConv2d.from_dense)")
    for name, child in list(model.named_children()):
        if type(child) is nn.Conv2d:
            if pointwise and is_pointwise_eligible(child):
                setattr(model, name, SparsePointwiseConv2d.from_dense(child))
            elif depthwise and is_depthwise_eligible(child):
                setattr(model, name, SparseDepthwiseConv2d.from_dense(child))
        else:
            sparsify(child, pointwise=pointwise, depthwise=depthwise)
    return model


def _sparse_layers(model: nn.Module) -> list[_SparseConv2d]:
    return [m for m in model.modules() if isinstance(m, _SparseConv2d)]


def compress(model: nn.Module, dense_threshold: float | None = None,
             fuse: bool | None = None, drop_dead_channels: bool = True) -> nn.Module:
    """Compress every sparse layer of ``model`` (:meth:`_SparseConv2d.compress`, in place) and
    return the model to run for inference.

    With ``fuse`` (default: when ``model`` is in eval mode and all its parameters and buffers are
    on the CPU) the return value is a fused inference copy built by
    :func:`sparseopt.nn.inference.fuse_for_inference`: BatchNorm folded into the convolution
    before it, ReLU/ReLU6 clamped in the kernels' epilogues, one channel-major activation layout
    through the sparse layers (no layout copies), and (``drop_dead_channels``) depthwise
    channels without a nonzero tap folded into the next 1x1 layer's bias and removed with the
    producer's matching output channel (:mod:`sparseopt.nn.dead_channels`); the same outputs as
    ``model`` in eval mode. It is a snapshot: call ``compress`` again after changing the weights. ``model`` itself is
    compressed in place either way, so code that keeps using ``model`` runs as before; with
    ``fuse=False`` (or in training mode, or off the CPU) ``model`` is returned.
    """
    for m in _sparse_layers(model):
        m.compress(dense_threshold)
    on_cpu = all(t.device.type == "cpu" for t in list(model.parameters()) + list(model.buffers()))
    if fuse is None:
        fuse = not model.training and on_cpu
    if not fuse:
        return model
    if not on_cpu:
        raise ValueError("compress(fuse=True): the fused inference modules run on the CPU; the "
                         "model has parameters or buffers on another device (use fuse=False)")
    from .inference import fuse_for_inference

    return fuse_for_inference(model, drop_dead_channels=drop_dead_channels)


def decompress(model: nn.Module) -> nn.Module:
    """Call :meth:`decompress` on every sparse layer of ``model`` and return ``model``."""
    for m in _sparse_layers(model):
        m.decompress()
    return model


def update_masks(model: nn.Module) -> nn.Module:
    """Call :meth:`update_mask` on every sparse layer of ``model`` and return ``model``."""
    for m in _sparse_layers(model):
        m.update_mask()
    return model


@torch.no_grad()
def batchnorm_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``bn(y) == y * scale + shift`` per channel in eval mode."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Inference transform: fold every eval-mode ``BatchNorm2d`` that directly follows a
    convolution (``nn.Conv2d`` or a sparse layer) inside an ``nn.Sequential`` into that
    convolution's weight and bias, and replace the BatchNorm by ``nn.Identity``. Returns ``model``.

    ``w[o] *= gamma[o] / sqrt(var[o] + eps)``, ``b[o] = beta[o] + (b[o] - mean[o]) * scale[o]``: a
    per-output-channel scale, so exact zeros (and masks) are preserved. Applies to dense and
    sparse models alike (the benchmark folds both sides). Raises if a BatchNorm to fold is in
    training mode (its batch statistics cannot be folded).

    Left as they are (not folded): a BatchNorm without running statistics
    (``track_running_stats=False``: it normalises with the batch statistics even in eval mode),
    one whose ``num_features`` differs from the convolution's output channels, and anything
    other than exactly ``nn.BatchNorm2d`` after exactly a convolution.
    """
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if not (isinstance(conv, (nn.Conv2d, _SparseConv2d)) and type(bn) is nn.BatchNorm2d):
                continue
            if conv.out_channels != bn.num_features:
                continue
            if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
                continue  # batch statistics in eval mode too: nothing fixed to fold
            if bn.training:
                raise RuntimeError(
                    "fold_batchnorm: a BatchNorm2d is in training mode; call model.eval() first"
                )
            scale, shift = batchnorm_scale_shift(bn)
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
            if conv.bias is None:
                conv.bias = nn.Parameter(shift.to(conv.weight.dtype).clone(),
                                         requires_grad=conv.weight.requires_grad)
            else:
                conv.bias.mul_(scale.to(conv.bias.dtype)).add_(shift.to(conv.bias.dtype))
            module._modules[b] = nn.Identity()
    return model

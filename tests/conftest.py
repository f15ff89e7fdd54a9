"""Shared fixtures: devices, dtypes, the shape set, and helpers to run a native op and its
pure-PyTorch reference side by side."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pytest
import torch

import sparseopt

try:
    from hypothesis import settings

    # The suite's fuzzing (tests/test_fuzz.py) is reproducible by default: each test draws the
    # same examples on every run, so a red CI means a change broke something. For a fresh search,
    # HYPOTHESIS_PROFILE=explore draws new random examples on each run.
    settings.register_profile("reproducible", derandomize=True)
    settings.register_profile("explore", derandomize=False)
    import os

    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))
except ImportError:  # hypothesis is only needed by the fuzz tests
    pass

HAS_CUDA = torch.cuda.is_available() and sparseopt.ops.has_native("cuda")
CUDA_SKIP = "CUDA kernels need a GPU and a CUDA build of sparseopt (none here)"

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP)),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# Values no real-number hyperparameter accepts (negative, non-finite, a string, a tensor), and
# the bad lr values: lr may be a one-element float tensor (as in torch.optim), so the tensor
# among BAD_NUMBERS is replaced by tensors that are negative, NaN, of two elements or integer.
BAD_NUMBERS = [-1.0, float("nan"), float("inf"), "0.1", torch.tensor(0.1)]
BAD_LR = BAD_NUMBERS[:-1] + [torch.tensor(-1.0), torch.tensor(float("nan")),
                             torch.tensor([0.1, 0.2]), torch.tensor(1)]

# (name, factory(device, dtype) -> tensor): the shapes every element-wise kernel is tested on.
# Odd sizes, empty and one-element tensors, 4-D conv weights, and non-contiguous layouts: a
# dense permutation (channels_last, transposed) and strided views with gaps.
SHAPES: dict[str, Callable[[str, torch.dtype], torch.Tensor]] = {
    "empty": lambda d, t: torch.empty(0, device=d, dtype=t),
    "one": lambda d, t: torch.empty(1, device=d, dtype=t),
    "odd_278011": lambda d, t: torch.empty(278011, device=d, dtype=t),
    "conv_64x3x3x3": lambda d, t: torch.empty(64, 3, 3, 3, device=d, dtype=t),
    "conv_channels_last": lambda d, t: torch.empty(32, 16, 3, 3, device=d, dtype=t).to(
        memory_format=torch.channels_last
    ),
    "transposed": lambda d, t: torch.empty(129, 65, device=d, dtype=t).t(),
    "strided_view": lambda d, t: torch.empty(97, 203, device=d, dtype=t)[:, ::3],
    "linear_1000x17": lambda d, t: torch.empty(1000, 17, device=d, dtype=t),
}


def make_tensor(shape: str, device: str, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """A tensor of the named layout filled with N(0, 1) values (generated on the CPU, so every
    device and run sees the same numbers)."""
    t = SHAPES[shape](device, dtype)
    t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64))
    return t


def clone_strided(t: torch.Tensor) -> torch.Tensor:
    """A copy with t's strides (also a view's gaps and offset), so the reference sees the same
    memory layout as the native kernel."""
    extent = t.storage_offset() + 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    base = torch.zeros(extent if t.numel() else t.storage_offset(), dtype=t.dtype, device=t.device)
    view = base.as_strided(t.shape, t.stride(), t.storage_offset())
    view.copy_(t)
    return view


def zero_every_7th(t: torch.Tensor) -> None:
    """Exact zeros at every 7th element in logical order (a pruned starting point)."""
    t.masked_fill_(torch.arange(t.numel(), device=t.device).reshape(t.shape) % 7 == 0, 0)


def make_grads(
    params: list[torch.Tensor], drift: list[torch.Tensor], step: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Gradients = a fixed per-element drift + noise, some exact zeros; every other step in the
    parameter's own layout, otherwise contiguous (both paths of the kernels' memory views)."""
    grads = []
    for p, d in zip(params, drift):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device)
        g = (d + 0.5 * noise).to(p.dtype)
        g.masked_fill_(noise.abs() < 0.05, 0)
        if step % 2 == 0 and not p.is_contiguous():
            g = deep_clone(p).copy_(g)
        grads.append(g)
    return grads


def deep_clone(obj):
    """Clone every tensor in a nested structure of lists/tuples/dicts, keeping strides."""
    if isinstance(obj, torch.Tensor):
        return clone_strided(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(deep_clone(x) for x in obj)
    if isinstance(obj, dict):
        return {k: deep_clone(v) for k, v in obj.items()}
    return copy.copy(obj)


def assert_lists_equal(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], what: str) -> None:
    assert len(a) == len(b), what
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape and x.dtype == y.dtype, f"{what}[{i}]"
        same_nan = torch.equal(x.isnan(), y.isnan())
        if not (same_nan and torch.equal(x.nan_to_num(0.0), y.nan_to_num(0.0))):
            diff = (x.double() - y.double()).abs()
            raise AssertionError(
                f"{what}[{i}] differs from the reference: max |diff| {diff.max().item():.3e} at "
                f"{int(diff.argmax())} of {x.numel()}; {int((diff > 0).sum())} elements differ"
            )


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=["simd", "portable"])
def isa(request, monkeypatch):
    """Run the CPU sparse-conv kernels once on their SIMD path (AVX-512 or AVX2, when the CPU
    has it) and once on the portable loops."""
    if request.param == "portable":
        monkeypatch.setenv("SPARSEOPT_CPU_PORTABLE", "1")
    else:
        monkeypatch.delenv("SPARSEOPT_CPU_PORTABLE", raising=False)
    return request.param

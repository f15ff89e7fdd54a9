"""Every CUDA kernel in csrc/cuda/, executed on the CPU through the host emulation build
(tests/emulation/emulated.py), against the pure-PyTorch reference.

The emulated ops (torch.ops.sparseopt_emu.*) are the real ops' code with CPU tensors routed to
the CUDA launchers: the multi-tensor launch planning (tensor table, block map, a tensor carried
between launches, step pointers), the kernels' vector and scalar paths, GradScaler's
unscale/skip and the device step counters all run. Element-wise results must equal the
reference bit for bit, as the CPU loop's do (the rules' host branches run here; what differs on
a GPU is the device math of the __CUDA_ARCH__ branches, see README "CUDA numerics").
"""

from __future__ import annotations

from collections.abc import Callable
import math
import os
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import emulated
import pytest
import torch
from conftest import DTYPES, assert_lists_equal, deep_clone, zero_every_7th

from sparseopt import reference
from sparseopt.ops import SPECS
from sparseopt._schedules import pdca_betas
from sparseopt.nn.formats import dense_to_csr, dense_to_taps

# make test-emu sets this: there a build that cannot be made must fail, not skip.
REQUIRED = os.environ.get("SPARSEOPT_REQUIRE_EMULATION") == "1"


@pytest.fixture(scope="module")
def emu():
    """torch.ops.sparseopt_emu, with the emulation library built (on first use) and loaded."""
    try:
        emulated.load()
    except Exception as exc:  # no compiler, or a build error
        if REQUIRED:
            raise
        pytest.skip(f"the CUDA emulation build is not available: {exc}")
    return torch.ops.sparseopt_emu


@pytest.fixture(scope="module")
def constants(emu) -> dict[str, int]:
    """The multi-tensor kernel's launch constants, to size inputs around its edges."""
    names = ["chunk", "max_blocks", "block", "ilp", "tensors_1", "tensors_2", "tensors_3",
             "tensors_4", "tensors_5"]
    return dict(zip(names, emu.launch_constants()))


@dataclass(frozen=True)
class Case:
    """One op configuration: per-parameter state lists after (params, grads), whether the op
    takes step counters, and the scalar arguments (a callable for tensor-valued ones)."""

    op: str
    state: tuple[str, ...]
    steps: bool
    scalars: tuple[Any, ...]
    exact_fp64: bool = True  # False: fp64 pow differs in its last bits (rules/adahessian.h)

    def depth(self) -> int:
        return 2 + sum(s != "empty" for s in self.state)


def _betas() -> torch.Tensor:
    return torch.tensor(pdca_betas(3), dtype=torch.float64)


CASES: dict[str, Case] = {
    "prox_sgd": Case("prox_sgd_step_", ("empty",), False, (0.1, 0.5, 0.0, 0.0)),
    "prox_sgd_mom_wd": Case("prox_sgd_step_", ("zeros",), False, (0.05, 0.2, 0.9, 1e-2)),
    "sqrt_t": Case("sqrt_t_prox_sgd_step_", ("empty",), True, (0.1, 0.01, 2.0, 0.0, 0.0)),
    "sqrt_t_mom_wd": Case("sqrt_t_prox_sgd_step_", ("zeros",), True, (0.05, 0.01, 3.0, 0.5, 1e-3)),
    "rda_center": Case("rda_step_", ("zeros", "randn"), True, (0.7, 0.3, 5.0, False, -1)),
    "irda_retrain_after_2": Case("rda_step_", ("zeros", "empty"), True, (1.0, 0.5, 5.0, False, 2)),
    "adam": Case("adam_step_", ("zeros", "zeros", "empty"), True,
                 (1e-2, 0.9, 0.999, 1e-8, 0.0, False, False, False, 0.0)),
    "adam_l2_amsgrad_maximize": Case("adam_step_", ("zeros", "zeros", "zeros"), True,
                                     (1e-2, 0.3, 0.99, 1e-6, 1e-2, True, True, False, 0.0)),
    "adamw_l1": Case("adam_step_", ("zeros", "zeros", "empty"), True,
                     (1e-2, 0.9, 0.999, 1e-8, 1e-2, False, False, True, 0.5)),
    "adahessian": Case("adahessian_step_", ("zeros", "zeros", "abs"), True,
                       (0.15, 0.9, 0.999, 1e-4, 0.0, 1.0)),
    "adahessian_wd_sqrt": Case("adahessian_step_", ("zeros", "zeros", "abs"), True,
                               (0.05, 0.5, 0.9, 1e-3, 1e-2, 0.5)),
    "adahessian_power": Case("adahessian_step_", ("zeros", "zeros", "abs"), True,
                             (0.1, 0.9, 0.99, 1e-4, 0.0, 0.7), exact_fp64=False),
    "obproxsg": Case("obproxsg_step_", (), True, (0.1, 0.3, 0.0, 2, 1, 1)),
    "obproxsg_eps": Case("obproxsg_step_", (), True, (0.1, 0.3, 0.05, 1, 1, 2)),
    "pdca": Case("pdca_step_", ("randn",), True, (_betas, 0.1, 0.05, 5.0, 0.0)),
    "pdca_wd": Case("pdca_step_", ("randn",), True, (_betas, 0.1, 0.05, 5.0, 1e-2)),
}


def _fill(kind: str, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    t = torch.empty_like(like)
    if kind == "zeros":
        return t.zero_()
    values = torch.randn(like.shape, generator=gen, dtype=torch.float64)
    return t.copy_(values.abs() if kind == "abs" else values)


def make_state(case: Case, params: list[torch.Tensor], gen: torch.Generator,
               first_step: Callable[[int], float] = lambda i: 0.0):
    state = [[] if kind == "empty" else [_fill(kind, p, gen) for p in params]
             for kind in case.state]
    steps = [torch.full((), first_step(i), dtype=torch.float32) for i in range(len(params))]
    return state, steps


def scalars(case: Case) -> list[Any]:
    return [s() if callable(s) else s for s in case.scalars]


def run_case(emu, case: Case, params: list[torch.Tensor], gen: torch.Generator, n_steps: int,
             scale: Callable[[int], float | None] = lambda t: None,
             inf: Callable[[int], float | None] = lambda t: None,
             first_step: Callable[[int], float] = lambda i: 0.0,
             check: Callable[..., None] | None = None) -> list[torch.Tensor]:
    """n_steps of the emulated op and of the reference on copies of the same tensors; after
    each step every list (params, unscaled grads, state, step counters) must be equal."""
    check = check or assert_lists_equal
    for p in params:  # exact zeros in the starting point, as a pruned model has
        zero_every_7th(p)
    state, steps = make_state(case, params, gen, first_step)
    ref = deep_clone((params, state, steps))
    args = scalars(case)
    native_fn = getattr(emu, case.op)
    ref_fn = getattr(reference, case.op)
    for t in range(n_steps):
        grads = []
        for p in params:
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            g = torch.empty_like(p).copy_(noise)
            g.masked_fill_(noise.abs() < 0.05, 0)
            grads.append(g)
        s, i = scale(t), inf(t)
        gs = None if s is None else torch.tensor(s)
        fi = None if i is None else torch.tensor(i)
        if gs is not None:
            grads = [deep_clone(g).copy_(g.double() * s) for g in grads]
        ref_grads = deep_clone(grads)
        lists = [params, grads, *state] + ([steps] if case.steps else [])
        ref_lists = [ref[0], ref_grads, *ref[1]] + ([ref[2]] if case.steps else [])
        native_fn(*lists, *args, gs, fi)
        ref_fn(*ref_lists, *args, gs, fi)
        check(params, ref[0], f"{case.op} step {t}: params")
        check(grads, ref_grads, f"{case.op} step {t}: grads")
        for k, (a, b) in enumerate(zip(state, ref[1])):
            check(a, b, f"{case.op} step {t}: state {k}")
        assert_lists_equal(steps, ref[2], f"{case.op} step {t}: steps")
    return steps


def close_fp64(a, b, what: str) -> None:
    """fp64 pow with k not in {1, 0.5}: libm (kernel) against SLEEF (reference), a few ulp of
    the O(1) parameters and updates per step (tests/test_fuzz.py bounds one step exactly)."""
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12, msg=what)


def misaligned(n: int, offset: int, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous tensor of n elements whose data pointer is `offset` elements past an aligned
    one: the multi-tensor kernel's vector path needs every pointer of a chunk aligned."""
    return torch.empty(n + offset, dtype=dtype)[offset:]


def edge_tensors(chunk: int, dtype: torch.dtype) -> list[torch.Tensor]:
    sizes = [0, 1, 7, chunk - 1, chunk + 1, 2 * chunk + 5]
    tensors = [torch.empty(n, dtype=dtype) for n in sizes]
    tensors += [misaligned(4 * 37 + 3, k, dtype) for k in (1, 2, 3)]
    tensors.append(torch.empty(65, 129, dtype=dtype).t())  # not contiguous: copied in and out
    tensors.append(torch.empty(8, 3, 5, 5, dtype=dtype))
    return tensors


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_every_op_and_dtype(emu, constants, name: str, dtype: torch.dtype, gen) -> None:
    """Sizes 0, 1, chunk - 1, chunk + 1 and several chunks, misaligned storage (the scalar path
    beside the vector one), a non-contiguous tensor; four steps with GradScaler's scale on
    steps 1-2, found_inf = 0 on step 2 and found_inf set (step skipped) on step 3."""
    case = CASES[name]
    params = edge_tensors(constants["chunk"], dtype)
    for p in params:
        p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    check = None if case.exact_fp64 or dtype != torch.float64 else close_fp64
    steps = run_case(emu, case, params, gen, 4,
                     scale=lambda t: 2.0 ** (t + 3) if t in (1, 2) else None,
                     inf=lambda t: {2: 0.0, 3: 1.0}.get(t), check=check)
    if case.steps:
        assert [s.item() for s in steps] == [3.0] * len(params)  # the skipped step does not count


@pytest.mark.parametrize("name", ["prox_sgd", "sqrt_t_mom_wd", "rda_center", "adam_l2_amsgrad_maximize",
                                  "adahessian"])
def test_tensor_table_overflow(emu, constants, name: str, gen) -> None:
    """More tensors than one launch's tensor table holds (per depth), each with its own step
    count: later launches must see their own tensors and step counters."""
    case = CASES[name]
    count = constants[f"tensors_{case.depth()}"] * 2 + 3
    params = [torch.randn(1 + (i * 37) % 300, generator=gen) for i in range(count)]
    run_case(emu, case, params, gen, 2, first_step=lambda i: float(3 * i))


def test_tensor_carried_between_launches(emu, constants, gen) -> None:
    """A tensor whose chunks do not fit in the blocks left in one launch continues in the next
    (as entry 0 of its table, with its address, size and step pointer carried). Step counts
    differ per tensor, so a step pointer left behind shows."""
    chunk, max_blocks = constants["chunk"], constants["max_blocks"]
    params = [torch.randn(5, generator=gen), torch.randn(chunk + 9, generator=gen),
              torch.randn((max_blocks - 1) * chunk + 17, generator=gen),
              torch.randn(chunk // 2, generator=gen)]
    run_case(emu, CASES["sqrt_t"], params, gen, 2, first_step=lambda i: float(10 * i + 1))


@pytest.mark.parametrize("name", ["sqrt_t_mom_wd", "adamw_l1", "pdca_wd", "obproxsg"])
def test_mixed_dtypes_in_one_call(emu, name: str, gen) -> None:
    """One launch per dtype present; the step counters of each dtype's tensors stay theirs."""
    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.float16, torch.float32]
    params = [torch.randn(1000 + 13 * i, generator=gen).to(dt) for i, dt in enumerate(dtypes)]
    run_case(emu, CASES[name], params, gen, 3, first_step=lambda i: float(i))


@pytest.mark.parametrize("name", ["prox_sgd_mom_wd", "sqrt_t", "rda_center", "adamw_l1",
                                  "adahessian", "obproxsg", "pdca_wd"])
def test_tensor_lr_is_read_on_the_device(emu, constants, name: str, gen) -> None:
    """The `.tensor_lr` overload: the kernel reads lr from the tensor at launch (for CUDA graphs
    and compiled steps). Two launches per call (a mixed-dtype list), lr changed between steps:
    bit for bit the float overload's results with the same lr values."""
    case = CASES[name]
    lr_index = SPECS[case.op].lr_index
    sizes = [constants["chunk"] + 3, 7, 300]
    dtypes = [torch.float32, torch.float64, torch.float32]
    params = [torch.randn(n, generator=gen).to(dt) for n, dt in zip(sizes, dtypes)]
    state, steps = make_state(case, params, gen)
    twin = deep_clone((params, state, steps))
    lr = torch.zeros((), dtype=torch.float64)
    packet = getattr(emu, case.op)
    for t, lr_value in enumerate([0.1, 0.025, 0.4]):
        grads = [torch.randn(p.shape, generator=gen).to(p.dtype) for p in params]
        twin_grads = deep_clone(grads)
        args = [params, grads, *state] + ([steps] if case.steps else []) + scalars(case)
        twin_args = [twin[0], twin_grads, *twin[1]] + ([twin[2]] if case.steps else []) + scalars(case)
        lr.fill_(lr_value)
        args[lr_index] = lr
        twin_args[lr_index] = lr_value
        packet.tensor_lr(*args, None, None)
        packet.default(*twin_args, None, None)
        assert_lists_equal(params, twin[0], f"{case.op} step {t}: params")
        for k, (a, b) in enumerate(zip(state, twin[1])):
            assert_lists_equal(a, b, f"{case.op} step {t}: state {k}")


# -- AdaHessian's Hutchinson pass ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("accumulate", [False, True])
def test_hutchinson_rows(emu, dtype: torch.dtype, accumulate: bool, gen) -> None:
    """Rows of a conv weight's spatial taps (row_len = kh*kw) and element-wise tensors, sizes
    around the kernel's 256-thread blocks."""
    shapes = [(0,), (1,), (257,), (16, 8, 3, 3), (3, 5, 1, 7), (2, 2, 5, 5), (300, 1, 1, 1)]
    diags = [torch.randn(s, generator=gen).abs().to(dtype) for s in shapes]
    zs = [torch.randint(0, 2, s, generator=gen).to(dtype) * 2 - 1 for s in shapes]
    hzs = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    ref = deep_clone(diags)
    emu.hutchinson_diag_(diags, zs, hzs, 0.25, accumulate)
    reference.hutchinson_diag_(ref, zs, hzs, 0.25, accumulate)
    assert_lists_equal(diags, ref, "hutchinson diag")


# -- sparse convolutions ------------------------------------------------------------------------

def sequential_pointwise(x, row_ptr, col_idx, values, bias):
    """The pointwise kernel's own order: acc = bias, then + v*x per nonzero in CSR order (each
    product and sum rounded once), so the comparison can be bit for bit."""
    n, _, h, w = x.shape
    out = torch.empty(n, row_ptr.numel() - 1, h, w, dtype=x.dtype)
    for o in range(row_ptr.numel() - 1):
        acc = torch.full((n, h, w), 0.0 if bias is None else bias[o].item(), dtype=x.dtype)
        for k in range(int(row_ptr[o]), int(row_ptr[o + 1])):
            acc = acc + values[k] * x[:, int(col_idx[k])]
        out[:, o] = acc
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape, density", [
    ((1, 3, 1, 1), 1.0),        # one pixel
    ((2, 6, 9, 29), 0.0),       # nnz 0: the bias only
    ((2, 600, 3, 5), 0.95),     # rows with more nonzeros than one shared-memory staging round
    ((1, 17, 16, 17), 0.3),     # 272 pixels: a second spatial tile, partly idle threads
    ((3, 5, 1, 255), 0.5),
])
@pytest.mark.parametrize("with_bias", [True, False])
def test_sparse_pointwise(emu, shape, density: float, with_bias: bool, dtype, gen) -> None:
    n, c, h, w = shape
    out_channels = 4
    weight = torch.randn(out_channels, c, generator=gen, dtype=torch.float64)
    weight[torch.rand(weight.shape, generator=gen) >= density] = 0
    weight[1] = 0  # an empty row
    row_ptr, col_idx, values = dense_to_csr(weight.to(dtype).reshape(out_channels, c, 1, 1))
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(out_channels, generator=gen, dtype=torch.float64).to(dtype) if with_bias else None
    got = emu.csr_pointwise_conv2d(x, row_ptr, col_idx, values, bias)
    assert torch.equal(got, sequential_pointwise(x, row_ptr, col_idx, values, bias))
    # and the reference (another summation order: sums of up to 600 products in fp32)
    torch.testing.assert_close(got, reference.csr_pointwise_conv2d(x, row_ptr, col_idx, values, bias),
                               rtol=1e-5, atol=1e-4)


def sequential_depthwise(x, tap_ptr, tap_idx, values, bias, kernel, stride, padding):
    """The depthwise kernel's order: acc = bias, then + v*x per nonzero tap in list order, taps
    that fall on the padding skipped."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = torch.empty(n, c, oh, ow, dtype=x.dtype)
    ys = torch.arange(oh) * sh - ph
    xs = torch.arange(ow) * sw - pw
    for ch in range(c):
        acc = torch.full((n, oh, ow), 0.0 if bias is None else bias[ch].item(), dtype=x.dtype)
        for k in range(int(tap_ptr[ch]), int(tap_ptr[ch + 1])):
            ky, kx = divmod(int(tap_idx[k]), kw)
            iy, ix = ys + ky, xs + kx
            inside = ((iy >= 0) & (iy < h))[:, None] & ((ix >= 0) & (ix < w))[None, :]
            src = x[:, ch][:, iy.clamp(0, h - 1)][:, :, ix.clamp(0, w - 1)]
            acc = torch.where(inside, acc + values[k] * src, acc)
        out[:, ch] = acc
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kernel, stride, padding, hw", [
    ((3, 3), (1, 1), (1, 1), (7, 9)),
    ((3, 3), (2, 2), (1, 1), (8, 11)),
    ((3, 3), (1, 2), (0, 0), (5, 6)),
    ((5, 5), (1, 1), (2, 2), (6, 5)),
    ((5, 3), (2, 1), (2, 1), (9, 4)),
    ((1, 1), (1, 1), (0, 0), (3, 3)),
    ((3, 3), (3, 3), (2, 2), (10, 10)),   # padding beyond every tap of the border rows
    ((7, 7), (1, 1), (3, 3), (4, 4)),     # a kernel larger than the image
])
def test_sparse_depthwise(emu, kernel, stride, padding, hw, dtype, gen) -> None:
    n, c = 2, 5
    weight = torch.randn(c, 1, *kernel, generator=gen, dtype=torch.float64)
    weight[torch.rand(weight.shape, generator=gen) < 0.4] = 0
    weight[2] = 0  # a channel with no taps
    tap_ptr, tap_idx, values = dense_to_taps(weight.to(dtype))
    x = torch.randn(n, c, *hw, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype)
    got = emu.sparse_depthwise_conv2d(x, tap_ptr, tap_idx, values, bias, kernel, stride, padding)
    want = sequential_depthwise(x, tap_ptr, tap_idx, values, bias, kernel, stride, padding)
    assert torch.equal(got, want)
    torch.testing.assert_close(got, reference.sparse_depthwise_conv2d(
        x, tap_ptr, tap_idx, values, bias, kernel, stride, padding))


@pytest.mark.parametrize("which", ["col_idx", "row_ptr"])
def test_opt_in_index_check(emu, monkeypatch, which: str, gen) -> None:
    """SPARSEOPT_CHECK_INDICES=1: bad indices of the CUDA path give an error naming them, before
    any kernel reads out of bounds (on a GPU: instead of an illegal-address fault)."""
    weight = torch.randn(3, 4, 1, 1, generator=gen)
    row_ptr, col_idx, values = dense_to_csr(weight)
    if which == "col_idx":
        col_idx = col_idx.clone()
        col_idx[-1] = 4
    else:
        row_ptr = row_ptr.clone()
        row_ptr[1] = row_ptr[2] + 1
    monkeypatch.setenv("SPARSEOPT_CHECK_INDICES", "1")
    with pytest.raises(RuntimeError, match=which):
        emu.csr_pointwise_conv2d(torch.randn(1, 4, 2, 2), row_ptr, col_idx, values, None)


# -- the stand-in 16-bit conversions ------------------------------------------------------------

def _conversion_inputs() -> torch.Tensor:
    """float32 values whose 16-bit rounding is decided in every possible way: for each of the
    65,536 upper halves, low halves at and around the bfloat16 tie (0x8000) and the half ties
    of normal numbers (bit 12), plus exact zeros and random low bits; and every 16-bit value
    converted up, with its neighbours and midpoints."""
    upper = torch.arange(65536, dtype=torch.int64) << 16
    lows = torch.tensor([0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000, 0x7FFF,
                         0x8000, 0x8001, 0xE000, 0xF000, 0xFFFF], dtype=torch.int64)
    rand = torch.randint(0, 0x10000, (65536,), generator=torch.Generator().manual_seed(7))
    bits = torch.cat([(upper[:, None] | lows[None, :]).flatten(), upper | rand])
    half_values = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    finite = half_values[half_values.isfinite()].double()
    around = torch.cat([finite, torch.nextafter(finite, torch.full_like(finite, 1e9)),
                        finite * (1 + 2.0**-11), finite * (1 - 2.0**-12)]).float()
    signed = (bits & 0xFFFFFFFF).to(torch.int64)
    as_int32 = torch.where(signed >= 2**31, signed - 2**32, signed).to(torch.int32)
    return torch.cat([as_int32.view(torch.float32), around])


@pytest.fixture(scope="module")
def cuda_conversions(tmp_path_factory):
    """The real CUDA headers' host conversions on _conversion_inputs() (nvcc needed)."""
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not os.path.exists(nvcc):
        if REQUIRED:
            raise RuntimeError(f"no nvcc at {nvcc}")
        pytest.skip("nvcc (CUDA toolkit) not found: no ground truth for the conversions")
    directory = tmp_path_factory.mktemp("fp16")
    exe = directory / "cuda_fp16_host"
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_fp16_host.cu")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run([nvcc, "-O1", "-o", str(exe), src], check=True, env=env)
    x = _conversion_inputs()
    (directory / "in.bin").write_bytes(x.numpy().tobytes())
    subprocess.run([str(exe), str(directory / "in.bin"), str(directory / "out.bin")], check=True,
                   env=env)
    raw = torch.frombuffer(bytearray((directory / "out.bin").read_bytes()), dtype=torch.uint8)
    n = x.numel()
    half = raw[: 2 * n].view(torch.int16).to(torch.int32) & 0xFFFF
    bf16 = raw[2 * n: 4 * n].view(torch.int16).to(torch.int32) & 0xFFFF
    up = raw[4 * n:].view(torch.int32)
    return x, half, bf16, up[:65536], up[65536:]


@pytest.mark.parametrize("bfloat16", [False, True], ids=["half", "bfloat16"])
def test_stand_in_conversions_match_cuda(emu, cuda_conversions, bfloat16: bool) -> None:
    """Every 16-bit pattern converts to the same float32 bits, and every float32 input rounds to
    the same 16-bit pattern (ties to even, overflow to inf, NaN to 0x7fff) as CUDA's headers."""
    x, half, bf16, up_half, up_bf16 = cuda_conversions
    want_down, want_up = (bf16, up_bf16) if bfloat16 else (half, up_half)
    got_down = emu.float_to_bits(x, bfloat16)
    bad = (got_down != want_down).nonzero()
    assert bad.numel() == 0, (f"{bad.numel()} inputs round differently, first {x[bad[0]].item()!r}: "
                              f"{got_down[bad[0]].item():#06x} != {want_down[bad[0]].item():#06x}")
    patterns = torch.arange(65536, dtype=torch.int32)
    got_up = emu.bits_to_float(patterns, bfloat16).view(torch.int32)
    assert torch.equal(got_up, want_up)
    # and, NaNs aside, torch's own CPU conversions (c10::Half / c10::BFloat16) agree
    dtype = torch.bfloat16 if bfloat16 else torch.float16
    torch_down = x.to(dtype).view(torch.int16).to(torch.int32) & 0xFFFF
    assert torch.equal(got_down[~x.isnan()], torch_down[~x.isnan()])


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999, 0.95, 0.5, 0.3, 0.0])
def test_device_bias_corrections_are_correctly_rounded(emu, beta: float) -> None:
    """The GPU's beta^t (rules::pow_exact_: double-double squaring, no device pow) is the
    correctly rounded value for every step count t up to 2^14 with beta^t >= 2^-900 (below
    2^-53 the bias correction 1 - beta^t is exactly 1 however beta^t rounds, and near the
    subnormals the double-double's low part runs out of bits), and so equals the reference's
    `beta ** t` (libm) wherever libm rounds correctly; likewise sqrt(1 - beta^t) against
    `(1 - beta ** t) ** 0.5`. Where they differ, the exact rational power decides."""
    t_max = 2**14
    got = emu.bias_corrections(beta, t_max)
    libm = torch.tensor([beta ** float(t) for t in range(1, t_max + 1)], dtype=torch.float64)
    normal = libm >= 2.0**-900
    differ = ((got[0] != libm) & normal).nonzero().flatten().tolist()
    assert len(differ) <= t_max // 100, f"{len(differ)} of {t_max} step counts differ from libm"
    bias_differ = ((1 - got[0]) != (1 - libm)).nonzero().flatten().tolist()
    assert set(bias_differ) <= set(differ)  # the corrections themselves differ only there
    exact = Fraction(beta)
    for i in differ:  # libm misrounded there: pow_exact_ must hold the correctly rounded power
        assert got[0, i].item() == float(exact ** (i + 1)), f"t = {i + 1}"
    same = [i for i in range(t_max) if i not in set(differ)]
    libm_sqrt = torch.tensor([(1 - libm[i].item()) ** 0.5 for i in same], dtype=torch.float64)
    differ_sqrt = (got[1, same] != libm_sqrt).nonzero().flatten().tolist()
    assert len(differ_sqrt) <= t_max // 100
    for k in differ_sqrt:  # correctly rounded sqrt of the same double
        x = Fraction(1 - got[0, same[k]].item())
        s = got[1, same[k]].item()
        below, above = math.nextafter(s, 0.0), math.nextafter(s, 2.0)
        assert abs(Fraction(s) ** 2 - x) <= min(abs(Fraction(below) ** 2 - x),
                                                abs(Fraction(above) ** 2 - x))

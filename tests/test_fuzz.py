"""Hypothesis fuzzing of every native kernel against its pure-PyTorch reference.

Optimizer ops (l1 family, Adam/AdamW, AdaHessian's two ops, OBProx-SG, pDCA_e): random sizes,
shapes, memory layouts (transposed, strided views with gaps, channels_last), dtypes (mixed within
one call too), hyperparameters over their valid ranges including the edges, GradScaler's
grad_scale/found_inf, step counters, and values including +-0, subnormals, huge numbers, inf and
NaN. Native must equal the reference bit for bit (NaN where the reference has NaN, and the sign
of every non-NaN value, zeros included) in every tensor the op reads or writes: parameters,
gradients (unscaled in place), state and step counters. This is the tolerance
tests/test_kernels.py, test_adahessian.py and test_obprox_pdca.py use for these ops:
csrc/rules/common.h's contract is one correctly rounded IEEE operation per reference operation
(Adam's fused multiply-adds are explicit fma calls on the native side and torch's fused
lerp/addcmul/add(alpha) on the reference side), so there is no tolerance to grant. Two
exceptions, each explained at its test: Adam's params/exp_avgs/max_exp_avg_sqs are compared up
to the sign of exact zeros (torch's lerp and maximum sign a zero by the element's position), and
AdaHessian's float64 parameters with hessian_power other than 1 and 0.5 to 8 ulp (pow is SLEEF
in torch, libm in the kernel).

Sparse convolutions (pointwise CSR, depthwise taps; the compressed layers): sums, whose rounding
depends on the summation order (AVX-512 FMA vs oneDNN), so they are compared with a tolerance
relative to the sum of the absolute values of the terms, over random shapes, channel counts,
strides, paddings, input layouts and sparsity patterns (all-zero weights, empty rows, empty
batches and zero-sized maps included), on both CPU code paths (AVX-512 and portable).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from conftest import deep_clone
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sparseopt
from sparseopt import reference
from sparseopt._schedules import pdca_betas
from sparseopt.nn import SparseDepthwiseConv2d, SparsePointwiseConv2d
from sparseopt.nn import formats
from sparseopt.reference import sparse_conv as conv_ref

pytestmark = pytest.mark.skipif(
    not sparseopt.ops.extension_loaded(), reason="the native extension is not built"
)

SPECIAL = [0.0, -0.0, 1e-45, -1e-40, 1e-310, 3e38, -3e38, 1e300, float("inf"), float("-inf"),
           float("nan"), 1.0, -1.0, 0.5]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@st.composite
def tensors(draw, n: int, dtype: torch.dtype) -> list[torch.Tensor]:
    values = st.one_of(st.sampled_from(SPECIAL),
                       st.floats(allow_nan=True, allow_infinity=True, width=64))
    out = []
    for _ in range(n):
        data = draw(st.lists(values, min_size=0, max_size=40))
        t = torch.tensor(data, dtype=torch.float64).to(dtype)
        if draw(st.booleans()) and t.numel() > 1:  # a strided view
            t = torch.stack([t, t]).t()[:, 0]
        out.append(t)
    return out


def _equal(a: list[torch.Tensor], b: list[torch.Tensor], what: str,
           signed_zeros: bool = True) -> None:
    assert len(a) == len(b), f"{what}: {len(a)} tensors vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=f"{what}[{i}]")
        if signed_zeros:
            # +0 and -0 compare equal; the sign bit must match too (wherever x is not NaN).
            keep = ~x.isnan()
            assert torch.equal(x.signbit()[keep], y.signbit()[keep]), f"{what}[{i}]: zero signs"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    op=st.sampled_from(["prox", "sqrt_t", "rda"]),
    lr=st.sampled_from([0.0, 1e-3, 0.5, 10.0]),
    l1=st.sampled_from([0.0, 1e-6, 0.1, 1e4]),
    momentum=st.sampled_from([0.0, 0.9]),
    scale=st.sampled_from([None, 1.0, 65536.0, 1e-3]),
)
def test_native_equals_reference_on_any_values(data, dtype, op, lr, l1, momentum, scale) -> None:
    sizes = data.draw(st.integers(1, 3))
    params = data.draw(tensors(sizes, dtype))
    grads = [torch.tensor(data.draw(st.lists(
        st.one_of(st.sampled_from(SPECIAL), st.floats(width=64)),
        min_size=p.numel(), max_size=p.numel()
    )), dtype=torch.float64).to(dtype).reshape(p.shape) for p in params]
    state = [torch.tensor(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=p.numel(),
                                             max_size=p.numel())),
                          dtype=torch.float64).to(dtype).reshape(p.shape) for p in params]
    steps = [torch.full((), float(data.draw(st.integers(0, 10**6)))) for _ in params]
    gs = None if scale is None else torch.tensor(scale)

    def call(fn_ns, ps, gr, stt, sts):
        if op == "prox":
            fn_ns.prox_sgd_step_(ps, gr, stt if momentum else [], lr, l1, momentum, 0.01, gs)
        elif op == "sqrt_t":
            fn_ns.sqrt_t_prox_sgd_step_(ps, gr, stt if momentum else [], sts, lr, l1, 2.0,
                                        momentum, 0.0, gs)
        else:
            fn_ns.rda_step_(ps, gr, stt, [], sts, lr, l1, 3.0, momentum > 0, 5, gs)

    clone = lambda ts: [t.clone() for t in ts]  # noqa: E731
    ref = (clone(params), clone(grads), clone(state), clone(steps))
    call(torch.ops.sparseopt, params, grads, state, steps)
    call(reference, *ref)
    _equal(params, ref[0], "params")
    _equal(grads, ref[1], "grads")
    _equal(state, ref[2], "state")
    _equal(steps, ref[3], "steps")


# ---- the other optimizer ops: shared strategies ---------------------------------------------
VALUES = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True,
                                                       width=64))
LAYOUTS = ["contiguous", "transposed", "gaps", "channels_last"]
# Step counters before the step: fresh, early, large (beta**t underflows to 0), at 2**24 where a
# float32 step counter no longer counts exactly.
STEP_VALUES = st.one_of(st.sampled_from([0, 1, 2, 9, 2**24 - 1, 2**24]), st.integers(0, 10**6))
GRAD_SCALES = st.sampled_from([None, 1.0, 65536.0, 3.0, 1e-3, 2.0**-24, 1e38])
FOUND_INFS = st.sampled_from([None, 0.0, 0.0, 1.0])


def _fit(shape: list[int], limit: int = 48) -> tuple[int, ...]:
    """Halve the largest dimension until the tensor has at most `limit` elements."""
    shape = list(shape)
    while math.prod(shape) > limit:
        k = shape.index(max(shape))
        shape[k] //= 2
    return tuple(shape)


SHAPES_ST = st.one_of(
    st.lists(st.integers(0, 6), max_size=2),      # scalars, empty, vectors, matrices
    st.lists(st.integers(1, 4), min_size=3, max_size=4),  # conv weights (the row path of D)
).map(_fit)


def _in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values, same shape, in another memory layout (when the shape has one)."""
    if layout == "transposed" and t.dim() >= 2:
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "gaps" and t.dim() >= 1:  # a strided view with holes
        base = torch.zeros(*t.shape[:-1], 2 * t.shape[-1] + 1, dtype=t.dtype)
        view = base[..., 1::2]
        view.copy_(t)
        return view
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


@st.composite
def tensor_of(draw, shape: tuple[int, ...], dtype: torch.dtype, values=VALUES) -> torch.Tensor:
    n = math.prod(shape)
    data = draw(st.lists(values, min_size=n, max_size=n))
    t = torch.tensor(data, dtype=torch.float64).to(dtype).reshape(shape)
    return _in_layout(t, draw(st.sampled_from(LAYOUTS)))


@st.composite
def problems(draw, n_lists: int) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """`n_lists` tensor lists (params, grads, state...) matching one to one in shape and dtype,
    each tensor in its own random layout, and one float32 step counter per parameter. Lists may
    be empty; dtypes are one per call or mixed."""
    n = draw(st.integers(0, 3))
    mixed = draw(st.booleans())
    base = draw(st.sampled_from(DTYPES))
    lists: list[list[torch.Tensor]] = [[] for _ in range(n_lists)]
    for _ in range(n):
        dtype = draw(st.sampled_from(DTYPES)) if mixed else base
        shape = draw(SHAPES_ST)
        for lst in lists:
            lst.append(draw(tensor_of(shape, dtype)))
    steps = [torch.tensor(float(draw(STEP_VALUES)), dtype=torch.float32) for _ in range(n)]
    return lists, steps


def _scalar(v: float | None) -> torch.Tensor | None:
    return None if v is None else torch.tensor(v, dtype=torch.float32)


def _run_both(op: str, lists, steps, call, unsigned_zeros: tuple[int, ...] = ()) -> None:
    """Run `call(fn, lists, steps)` with the native op and with the reference on a copy (same
    strides), then require every list, written or not, and the steps to be bit-identical (the
    lists numbered in `unsigned_zeros`: up to the sign of exact zeros)."""
    ref_lists, ref_steps = deep_clone((lists, steps))
    call(getattr(torch.ops.sparseopt, op), lists, steps)
    call(getattr(reference, op), ref_lists, ref_steps)
    for k, (a, b) in enumerate(zip(lists, ref_lists)):
        _equal(a, b, f"{op}: list {k}", signed_zeros=k not in unsigned_zeros)
    _equal(steps, ref_steps, f"{op}: steps")


def _unit(*edges: float):
    """A float in [0, 1) (betas, momentum): the edges, or any."""
    return st.one_of(st.sampled_from(edges), st.floats(0, 1, exclude_max=True))


def _nonneg(*edges: float, hi: float = 1e3):
    return st.one_of(st.sampled_from(edges), st.floats(0, hi))


def _positive(*edges: float, hi: float = 1e3):
    return st.one_of(st.sampled_from(edges), st.floats(0, hi, exclude_min=True))


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- Adam / AdamW ---------------------------------------------------------------------------
def _lerp_form_agrees(beta1: float) -> bool:
    """Whether torch's lerp takes the same form for weight 1 - beta1 in float32 and float64.

    The native op decides the form once per call from the first parameter's math type
    (csrc/ops/adam.cpp); the reference decides per tensor. They differ only for beta1 within
    2**-25 of 0.5 in a call that mixes float64 with a 32-bit-math dtype: a documented limit,
    not what this test looks for."""
    w = 1 - beta1
    return (abs(w) < 0.5) == (abs(float(torch.tensor(w, dtype=torch.float32))) < 0.5)


@FUZZ
@given(
    data=st.data(),
    lr=_nonneg(0.0, 1e-3, 0.1, 10.0),
    beta1=_unit(0.0, 0.3, 0.5, 0.9, 0.999999),
    beta2=_unit(0.0, 0.5, 0.999, 1 - 1e-12),
    eps=_positive(1e-8, 1e-300, 1e-3, 1.0),  # 1e-300 rounds to 0 in float32 math
    weight_decay=_nonneg(0.0, 1e-2, 2.0),
    amsgrad=st.booleans(),
    maximize=st.booleans(),
    decoupled=st.booleans(),
    l1=_nonneg(0.0, 1e-6, 0.1, 1e4),
    scale=GRAD_SCALES,
    inf=FOUND_INFS,
)
def test_adam_native_equals_reference(data, lr, beta1, beta2, eps, weight_decay, amsgrad,
                                      maximize, decoupled, l1, scale, inf) -> None:
    (params, grads, exp_avgs, exp_avg_sqs, vmax), steps = data.draw(problems(5))
    if len({p.dtype for p in params}) > 1:
        assume(_lerp_form_agrees(beta1))
    lists = [params, grads, exp_avgs, exp_avg_sqs, vmax if amsgrad else []]

    def call(fn, ls, sts):
        fn(*ls, sts, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled, l1,
           _scalar(scale), _scalar(inf))

    # Bit for bit, but +0 == -0 in params, exp_avgs and max_exp_avg_sqs (tests/test_kernels.py
    # compares Adam the same way): the reference's torch.lerp and torch.maximum give an exact
    # zero a sign that depends on the element's position in the tensor. Their vectorised CPU body
    # computes lerp as fma(w - 1, g - m, g) and maximum(a, b) as the max instruction (b on a
    # tie), the scalar tail (what is left after the last full vector: all of a small tensor)
    # as end - (end - self) * (1 - w) and std::max (a on a tie). The values are the same, the
    # zeros' signs not always: m = 0, g = -0, beta1 = 0 gives m = -0 in the body and +0 in the
    # tail, maximum(-0, +0) is +0 in the body and -0 in the tail. The native kernel computes
    # one form for every element; the parameter inherits m's sign through w + step * m when w
    # is a zero too.
    _run_both("adam_step_", lists, steps, call, unsigned_zeros=(0, 2, 4))


# ---- AdaHessian -----------------------------------------------------------------------------
@FUZZ
@given(
    data=st.data(),
    weight=_positive(1.0, 0.5, 1 / 3, 1e-3, 1e30, hi=1e6),
    accumulate=st.booleans(),
)
def test_hutchinson_diag_native_equals_reference(data, weight, accumulate) -> None:
    """Element-wise tensors (vectorised loop) and 3-D/4-D ones (conv weights: the mean over the
    spatial taps of each row), fresh or accumulating onto any previous diagonal."""
    (diags, zs, hzs), _ = data.draw(problems(3))

    def call(fn, ls, sts):
        fn(*ls, weight, accumulate)

    _run_both("hutchinson_diag_", [diags, zs, hzs], [], call)


@FUZZ
@given(
    data=st.data(),
    lr=_nonneg(0.0, 0.15, 10.0),
    beta1=_unit(0.0, 0.5, 0.9),
    beta2=_unit(0.0, 0.999, 1 - 1e-12),
    eps=_positive(1e-4, 1e-300, 1.0),
    weight_decay=_nonneg(0.0, 1e-2, 1.0),
    hessian_power=st.one_of(st.sampled_from([1.0, 0.5, 1e-3]),
                            st.floats(0, 1, exclude_min=True)),
    scale=GRAD_SCALES,
    inf=FOUND_INFS,
)
def test_adahessian_step_native_equals_reference(data, lr, beta1, beta2, eps, weight_decay,
                                                 hessian_power, scale, inf) -> None:
    (params, grads, exp_avgs, exp_h, hdiags), steps = data.draw(problems(5))
    lists = [params, grads, exp_avgs, exp_h, hdiags]

    def call(fn, ls, sts):
        fn(*ls, sts, lr, beta1, beta2, eps, weight_decay, hessian_power, _scalar(scale),
           _scalar(inf))

    if hessian_power in (1.0, 0.5) or all(p.dtype != torch.float64 for p in params):
        _run_both("adahessian_step_", lists, steps, call)
        return
    # float64 parameters with hessian_power other than 1 and 0.5: (...)^k is pow's own result
    # in double, SLEEF (<= 1 ulp) in torch's vectorised CPU pow vs libm in the kernel, so the
    # denominator may differ by a few ulp (csrc/rules/adahessian.h). Everything else stays
    # bit-exact; float64 parameters must agree to 8 ulp of |w| + |lr wd w| + |update|, the
    # magnitudes w - update - lr*wd*w is rounded against.
    old = [p.clone() for p in params]
    ref_lists, ref_steps = deep_clone((lists, steps))
    call(torch.ops.sparseopt.adahessian_step_, lists, steps)
    call(reference.adahessian_step_, ref_lists, ref_steps)
    for k in range(1, 5):
        _equal(lists[k], ref_lists[k], f"adahessian_step_: list {k}")
    _equal(steps, ref_steps, "adahessian_step_: steps")
    for i, (a, b, w) in enumerate(zip(params, ref_lists[0], old)):
        if a.dtype != torch.float64:
            _equal([a], [b], f"adahessian_step_: params[{i}]")
            continue
        t = ref_steps[i].double()
        m, v = ref_lists[2][i], ref_lists[3][i]
        update = lr * (m / (1 - beta1**t)) / ((v.sqrt() / (1 - beta2**t).sqrt()) ** hessian_power
                                              + eps)
        scale_ = (w.abs() + (lr * weight_decay) * w.abs() + update.abs()).nan_to_num(math.inf)
        finite = a.isfinite() & b.isfinite()
        assert torch.equal(a[~finite].nan_to_num(0.0), b[~finite].nan_to_num(0.0)), f"params[{i}]"
        assert torch.equal(a.isnan(), b.isnan()), f"adahessian_step_: params[{i}] NaNs"
        err = (a - b).abs()[finite]
        assert (err <= 8 * 2.0**-52 * scale_[finite]).all(), (
            f"adahessian_step_: params[{i}] differ by {err.max().item():.3e}")


# ---- OBProx-SG(+) and pDCA_e ----------------------------------------------------------------
@FUZZ
@given(
    data=st.data(),
    lr=_nonneg(0.0, 1e-3, 0.5, 10.0),
    l1=_nonneg(0.0, 1e-6, 0.1, 1e4),
    eps=_nonneg(0.0, 1e-6, 0.5),
    steps_per_epoch=st.integers(1, 5),
    n_p=st.integers(1, 3),
    n_o=st.integers(-1, 3),  # -1: OBProx-SG+ (orthant for ever), 0: Prox-SG only
    scale=GRAD_SCALES,
    inf=FOUND_INFS,
)
def test_obproxsg_native_equals_reference(data, lr, l1, eps, steps_per_epoch, n_p, n_o, scale,
                                          inf) -> None:
    (params, grads), steps = data.draw(problems(2))

    def call(fn, ls, sts):
        fn(*ls, sts, lr, l1, eps, steps_per_epoch, n_p, n_o, _scalar(scale), _scalar(inf))

    _run_both("obproxsg_step_", [params, grads], steps, call)


@FUZZ
@given(
    data=st.data(),
    lr=_nonneg(0.0, 1e-3, 0.5, 10.0),
    l1=_nonneg(0.0, 1e-6, 0.1, 1e4),
    theta=_positive(5.0, 1e-300, 1e-6, 1.0, 1e10, hi=1e6),
    weight_decay=_nonneg(0.0, 1e-2, 1.0),
    betas=st.one_of(
        st.integers(1, 6).map(lambda r: pdca_betas(r)),  # FISTA restarts
        st.lists(st.floats(-2, 2), min_size=1, max_size=5),                    # any weights
    ),
    scale=GRAD_SCALES,
    inf=FOUND_INFS,
)
def test_pdca_native_equals_reference(data, lr, l1, theta, weight_decay, betas, scale,
                                      inf) -> None:
    (params, grads, iterates), steps = data.draw(problems(3))
    beta_t = torch.tensor(betas, dtype=torch.float64)

    def call(fn, ls, sts):
        fn(*ls, sts, beta_t, lr, l1, theta, weight_decay, _scalar(scale), _scalar(inf))

    _run_both("pdca_step_", [params, grads, iterates], steps, call)


# ---- sparse convolutions ----------------------------------------------------------------------
# A sum's last bits depend on the order of its terms (the AVX-512 kernels use FMA chains, the
# reference is F.conv2d through oneDNN), so these compare with a tolerance: |native - reference|
# <= TOL * (the same convolution of |x|, |w|, |b|), i.e. relative to the sum of the terms'
# magnitudes, the bound floating-point summation error scales with. TOL is the 1e-5 (float32) /
# 1e-12 (float64) of tests/test_sparse_conv.py; the sums here have at most ~50 terms, whose
# rounding error is below 50 * 2**-24 = 3e-6 resp. 50 * 2**-53 = 6e-15 of that bound.
# Values are finite: a compressed weight skips its zeros, so inf * (pruned 0) is no NaN there
# while the dense reference gives NaN; that is the point of the format, not a mismatch.
CONV_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}
CONV_LAYOUTS = ["contiguous", "channels_last", "gaps_w", "gaps_c"]
PATTERNS = ["dense", "random", "all_zero", "zero_rows", "zero_cols", "one_per_row"]


class _Isa:
    """Run the CPU conv kernels on the AVX-512 path (where the CPU has it) or the portable one:
    csrc/cpu/sparse_conv_cpu.cpp reads SPARSEOPT_CPU_PORTABLE at every call."""

    def __init__(self, isa: str) -> None:
        self.isa = isa

    def __enter__(self) -> None:
        self.old = os.environ.get("SPARSEOPT_CPU_PORTABLE")
        os.environ["SPARSEOPT_CPU_PORTABLE"] = "1" if self.isa == "portable" else "0"

    def __exit__(self, *exc) -> None:
        if self.old is None:
            del os.environ["SPARSEOPT_CPU_PORTABLE"]
        else:
            os.environ["SPARSEOPT_CPU_PORTABLE"] = self.old


def _conv_input(shape: tuple[int, ...], dtype, layout: str, scale: float,
                gen: torch.Generator) -> torch.Tensor:
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    x[torch.rand(shape, generator=gen) < 0.1] = 0.0
    x = x.to(dtype)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout in ("gaps_w", "gaps_c") and x.numel() > 0:
        k = 3 if layout == "gaps_w" else 1
        wide = list(shape)
        wide[k] *= 2
        base = torch.zeros(wide, dtype=dtype)
        view = base[:, :, :, ::2] if k == 3 else base[:, ::2]
        view.copy_(x)
        return view
    return x


def _sparse_weight(shape: tuple[int, ...], dtype, pattern: str, density: float, scale: float,
                   gen: torch.Generator) -> torch.Tensor:
    """A weight [rows, cols, ...] with the given zero pattern (rows: output channels)."""
    w = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    flat = w.view(shape[0], math.prod(shape[1:]))  # zeroing it zeroes w
    if pattern == "random":
        flat[torch.rand(flat.shape, generator=gen) >= density] = 0
    elif pattern == "all_zero":
        flat.zero_()
    elif pattern == "zero_rows":
        flat[torch.rand(flat.shape[0], generator=gen) >= density] = 0
    elif pattern == "zero_cols":
        flat[:, torch.rand(flat.shape[1], generator=gen) >= density] = 0
    elif pattern == "one_per_row" and flat.shape[1] > 0:
        keep = torch.randint(0, flat.shape[1], (flat.shape[0],), generator=gen)
        mask = torch.zeros(flat.shape, dtype=torch.bool)
        mask[torch.arange(flat.shape[0]), keep] = True
        flat[~mask] = 0
    return w.to(dtype)


def _assert_sum_close(out: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor,
                      what: str) -> None:
    assert out.shape == expected.shape, f"{what}: shape {list(out.shape)} vs {list(expected.shape)}"
    assert out.dtype == expected.dtype, f"{what}: dtype {out.dtype} vs {expected.dtype}"
    assert out.is_contiguous(), f"{what}: the output is not contiguous"
    assert torch.isfinite(out).all(), f"{what}: non-finite output from finite input"
    err = (out.double() - expected.double()).abs()
    allowed = CONV_TOL[out.dtype] * bound.double() + 1e-300
    bad = err > allowed
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {out.numel()} outputs differ; worst |diff| "
        f"{err.max().item():.3e} where {CONV_TOL[out.dtype]:g} * sum|terms| allows "
        f"{allowed.flatten()[int((err - allowed).argmax())].item():.3e}"
    )


SPATIAL = st.one_of(st.integers(0, 9), st.integers(1, 9), st.integers(60, 70))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 3),
    c=st.integers(0, 40),
    o=st.integers(0, 24),
    h=st.integers(0, 9),
    w=SPATIAL,  # 60-70: several 64-wide tiles with a tail, one to four AVX-512 vectors
    dtype=st.sampled_from([torch.float32, torch.float64]),
    pattern=st.sampled_from(PATTERNS),
    density=st.floats(0, 1),
    bias=st.booleans(),
    layout=st.sampled_from(CONV_LAYOUTS),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    isa=st.sampled_from(["simd", "portable"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_pointwise_conv_native_equals_reference(n, c, o, h, w, dtype, pattern, density, bias,
                                                layout, scale, isa, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = _conv_input((n, c, h, w), dtype, layout, scale, gen)
    weight = _sparse_weight((o, c, 1, 1), dtype, pattern, density, scale, gen)
    b = _conv_input((o,), dtype, "contiguous", scale, gen) if bias else None
    rp, ci, v = formats.dense_to_csr(weight)
    assert v.numel() == int((weight != 0).sum())
    with _Isa(isa):
        out = torch.ops.sparseopt.csr_pointwise_conv2d(x, rp, ci, v, b)
    expected = conv_ref.csr_pointwise_conv2d(x, rp, ci, v, b)
    bound = conv_ref.csr_pointwise_conv2d(x.abs().double(), rp, ci, v.abs().double(),
                                     None if b is None else b.abs().double())
    _assert_sum_close(out, expected, bound, f"csr_pointwise_conv2d ({isa})")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 3),
    c=st.integers(1, 12),
    h=st.integers(0, 12),
    w=st.one_of(st.integers(0, 12), st.integers(40, 70)),  # one to four vectors, and the row loop
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    ph=st.integers(0, 3),
    pw=st.integers(0, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    pattern=st.sampled_from(PATTERNS),
    density=st.floats(0, 1),
    bias=st.booleans(),
    layout=st.sampled_from(CONV_LAYOUTS),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    isa=st.sampled_from(["simd", "portable"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_depthwise_conv_native_equals_reference(n, c, h, w, kh, kw, sh, sw, ph, pw, dtype,
                                                pattern, density, bias, layout, scale, isa,
                                                seed) -> None:
    assume(h + 2 * ph >= kh and w + 2 * pw >= kw)  # else the op rejects it (test_sparse_conv.py)
    gen = torch.Generator().manual_seed(seed)
    x = _conv_input((n, c, h, w), dtype, layout, scale, gen)
    weight = _sparse_weight((c, 1, kh, kw), dtype, pattern, density, scale, gen)
    b = _conv_input((c,), dtype, "contiguous", scale, gen) if bias else None
    tp, ti, v = formats.dense_to_taps(weight)
    conv = ([kh, kw], [sh, sw], [ph, pw])
    with _Isa(isa):
        out = torch.ops.sparseopt.sparse_depthwise_conv2d(x, tp, ti, v, b, *conv)
    expected = conv_ref.sparse_depthwise_conv2d(x, tp, ti, v, b, *conv)
    bound = conv_ref.sparse_depthwise_conv2d(x.abs().double(), tp, ti, v.abs().double(),
                                        None if b is None else b.abs().double(), *conv)
    _assert_sum_close(out, expected, bound, f"sparse_depthwise_conv2d ({isa})")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["pointwise", "depthwise"]),
    n=st.integers(0, 3),
    c=st.integers(1, 16),
    o=st.integers(1, 16),
    h=st.integers(1, 11),
    w=st.integers(1, 11),
    k=st.integers(1, 5),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    pattern=st.sampled_from(PATTERNS),
    density=st.floats(0, 1),
    bias=st.booleans(),
    layout=st.sampled_from(CONV_LAYOUTS),
    seed=st.integers(0, 2**32 - 1),
)
def test_compressed_layer_equals_training_mode(kind, n, c, o, h, w, k, stride, padding, dtype,
                                               pattern, density, bias, layout, seed) -> None:
    """The layers' compressed forward (the sparse kernels, pointwise stride by subsampling)
    against their training-mode forward (F.conv2d on weight * mask), any mask."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "pointwise":
        layer = SparsePointwiseConv2d(c, o, bias=bias, stride=stride, dtype=dtype)
    else:
        assume(h + 2 * padding >= k and w + 2 * padding >= k)
        layer = SparseDepthwiseConv2d(c, k, stride=stride, padding=padding, bias=bias,
                                      dtype=dtype)
    with torch.no_grad():
        mask = _sparse_weight(tuple(layer.weight.shape), torch.float64, pattern, density, 1.0,
                              gen) != 0
        layer.mask.copy_(mask)
        x = _conv_input((n, c, h, w), dtype, layout, 1.0, gen)
        expected = layer(x)
        bound = layer.to_dense().double()
        bound.weight.abs_()
        if bias:
            bound.bias.abs_()
        bound = bound(x.abs().double())
        layer.compress(dense_threshold=1.0)  # the sparse kernel at every density
        assert layer.kernel == "sparse"
        out = layer(x)
    # The training mode's memory format (channels_last for a channels_last input, as F.conv2d).
    # Not for an empty output: it is contiguous in every format, and which strides F.conv2d
    # gives it then depends on its internal path (e.g. on the channel counts), not on a rule.
    for fmt in (torch.contiguous_format, torch.channels_last) if out.numel() else ():
        assert out.is_contiguous(memory_format=fmt) == expected.is_contiguous(memory_format=fmt), (
            f"compressed {type(layer).__name__}: output strides {out.stride()}, training mode "
            f"{expected.stride()} ({layout} input)")
    _assert_sum_close(out.contiguous(), expected, bound, f"compressed {type(layer).__name__}")


# ---- every in-place op of the op table, hyperparameters drawn from their domains -------------
TABLE_OPS = [s for s in sparseopt.ops.SPECS.values() if s.fake is None]


def _in_domain(domain) -> st.SearchStrategy[float]:
    """Values inside ``domain``: its closed ends, and values near and between them."""
    low = 0.0 if domain.low is None else domain.low
    high = 1e3 if domain.high is None else domain.high
    edges = [v for v in (low, high, low + 1e-6, high - 1e-6, (low + high) / 2, 1e-3, 0.9)
             if domain.contains(v)]
    return st.sampled_from(edges)


def _leaves(args) -> list[torch.Tensor]:
    return [t for a in args for t in (a if isinstance(a, list) else [a])
            if isinstance(t, torch.Tensor)]  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), spec=st.sampled_from(TABLE_OPS),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_any_op_of_the_table_with_hyperparameters_from_its_domains(data, spec, dtype) -> None:
    """(float64 is left to the per-op tests: AdaHessian's pow with hessian_power other than 1
    and 0.5 is held to 8 ulp there, not bit for bit.)"""
    args = list(spec.sample("cpu", dtype))
    for name, domain in spec.hyper.items():
        args[spec.arg_names.index(name)] = data.draw(_in_domain(domain), label=name)
    ref = [deep_clone(a) for a in args]
    errors = []
    for fn, a in ((getattr(torch.ops.sparseopt, spec.name), args), (spec.reference, ref)):
        try:
            fn(*a)
        except RuntimeError as e:  # e.g. momentum 0 with momentum buffers: both refuse
            errors.append(str(e).split("\n")[0])
    assert len(errors) in (0, 2), errors
    assume(not errors)
    for i, (x, y) in enumerate(zip(_leaves(args), _leaves(ref))):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True,
                                   msg=f"{spec.name}: tensor {i}")  # fmt: skip

"""Hypothesis fuzzing of every l1 kernel against its reference: random sizes, strides, dtypes
and values including +-0, subnormals, huge numbers, inf and NaN. Native must equal reference bit
for bit (NaN where the reference has NaN)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparseopt
from sparseopt import reference

pytestmark = pytest.mark.skipif(
    not sparseopt.ops.native_available(), reason="the native extension is not built"
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


def _equal(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=f"{what}[{i}]")
        # +0 and -0 compare equal; the sign bit must match too.
        assert torch.equal(torch.signbit(x), torch.signbit(y)) or x.isnan().any(), f"{what}[{i}]"


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

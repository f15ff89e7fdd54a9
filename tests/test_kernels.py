"""The native element-wise kernels (l1 family, Adam, AdaHessian's update) against their
pure-PyTorch references, step by step.

Every case runs all SHAPES (empty, one element, 278011 elements, conv weights, channels_last,
transposed and strided views) in ONE op call, for 100 steps, and requires the native result to
equal the reference bit for bit after every step (params, gradients -- unscaled in place under
GradScaler --, state and step counters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from conftest import (
    DEVICES,
    DTYPES,
    SHAPES,
    assert_lists_equal,
    deep_clone,
    make_grads,
    make_tensor,
    zero_every_7th,
)

import sparseopt
from sparseopt import reference

pytestmark = pytest.mark.skipif(
    not sparseopt.ops.extension_loaded(), reason="the native extension is not built"
)

STEPS = 100


class Case:
    """One op configuration: how to build the call's arguments from (params, grads, state)."""

    def __init__(self, op: str, hyper: dict[str, Any], state: list[str], steps: bool,
                 sparse: bool = True) -> None:
        self.op = op
        self.sparse = sparse  # the rule makes exact zeros
        self.hyper = hyper
        self.state = state  # per-parameter state lists, in call order
        self.steps = steps

    def args(self, params, grads, state, steps) -> list[Any]:
        lists = [params, grads] + [state[k] for k in self.state]
        if self.steps:
            lists.append(steps)
        return lists + list(self.hyper.values())

    def __repr__(self) -> str:
        return f"{self.op}({', '.join(f'{k}={v}' for k, v in self.hyper.items())})"


CASES = {
    "prox_sgd": Case(
        "prox_sgd_step_", dict(lr=0.1, l1=0.5, momentum=0.0, weight_decay=0.0), ["mom0"], False
    ),
    "prox_sgd_mom_wd": Case(
        "prox_sgd_step_", dict(lr=0.05, l1=0.2, momentum=0.9, weight_decay=1e-2), ["mom"], False
    ),
    "sqrt_t": Case(
        "sqrt_t_prox_sgd_step_",
        dict(lr=0.1, l1=0.01, gamma=2.0, momentum=0.0, weight_decay=0.0),
        ["mom0"],
        True,
    ),
    "sqrt_t_mom_wd": Case(
        "sqrt_t_prox_sgd_step_",
        dict(lr=0.05, l1=0.01, gamma=3.0, momentum=0.5, weight_decay=1e-3),
        ["mom"],
        True,
    ),
    "rda_zero": Case(
        "rda_step_",
        dict(lr=1.0, l1=0.5, gamma=5.0, retrain=False, retrain_after=-1),
        ["gbar", "center0"],
        True,
    ),
    "rda_center": Case(
        "rda_step_",
        dict(lr=0.7, l1=0.3, gamma=5.0, retrain=False, retrain_after=-1),
        ["gbar", "center"],
        True,
    ),
    "irda_retrain_after_50": Case(
        "rda_step_",
        dict(lr=1.0, l1=0.5, gamma=5.0, retrain=False, retrain_after=50),
        ["gbar", "center0"],
        True,
    ),
    "irda_retrain": Case(
        "rda_step_",
        dict(lr=1.0, l1=0.5, gamma=5.0, retrain=True, retrain_after=-1),
        ["gbar", "center0"],
        True,
    ),
    "adam": Case(
        "adam_step_",
        dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
             maximize=False, decoupled_weight_decay=False, l1=0.0),
        ["z1", "z2", "none"], True, sparse=False,
    ),
    "adam_l2_amsgrad_maximize": Case(
        "adam_step_",
        dict(lr=1e-2, beta1=0.3, beta2=0.99, eps=1e-6, weight_decay=1e-2, amsgrad=True,
             maximize=True, decoupled_weight_decay=False, l1=0.0),
        ["z1", "z2", "z3"], True, sparse=False,
    ),
    "adamw_l1": Case(
        "adam_step_",
        dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False,
             maximize=False, decoupled_weight_decay=True, l1=0.5),
        ["z1", "z2", "none"], True,
    ),
    "adahessian": Case(
        "adahessian_step_",
        dict(lr=0.15, beta1=0.9, beta2=0.999, eps=1e-4, weight_decay=0.0, hessian_power=1.0),
        ["z1", "z2", "hdiag"], True, sparse=False,
    ),
    "adahessian_wd": Case(
        "adahessian_step_",
        dict(lr=0.05, beta1=0.5, beta2=0.9, eps=1e-3, weight_decay=1e-2, hessian_power=1.0),
        ["z1", "z2", "hdiag"], True, sparse=False,
    ),
}


def make_problem(
    shapes: list[str], device: str, dtypes: list[torch.dtype], gen: torch.Generator
) -> tuple[list[torch.Tensor], dict[str, list[torch.Tensor]], list[torch.Tensor]]:
    params = [make_tensor(s, device, dt, gen) for s, dt in zip(shapes, dtypes)]
    for p in params:  # exact zeros in the starting point (a pruned model)
        zero_every_7th(p)
    state = {
        "mom": [torch.zeros_like(p) for p in params],
        "mom0": [],
        "gbar": [torch.zeros_like(p) for p in params],
        "center": [make_tensor(s, device, dt, gen) for s, dt in zip(shapes, dtypes)],
        "center0": [],
        "z1": [torch.zeros_like(p) for p in params],
        "z2": [torch.zeros_like(p) for p in params],
        "z3": [torch.zeros_like(p) for p in params],
        "none": [],
        "hdiag": [make_tensor(s, device, dt, gen).abs_() for s, dt in zip(shapes, dtypes)],
    }
    steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in params]
    return params, state, steps


def run_side_by_side(
    case: Case,
    device: str,
    dtypes: list[torch.dtype],
    shapes: list[str],
    gen: torch.Generator,
    steps: int = STEPS,
    grad_scale: Callable[[int], float | None] = lambda t: None,
    found_inf: Callable[[int], float | None] = lambda t: None,
) -> tuple[list[torch.Tensor], dict[str, list[torch.Tensor]], list[torch.Tensor]]:
    params, state, step_t = make_problem(shapes, device, dtypes, gen)
    ref = deep_clone((params, state, step_t))
    drift = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device) for p in params]
    native_fn = getattr(torch.ops.sparseopt, case.op)
    ref_fn = getattr(reference, case.op)
    for t in range(steps):
        grads = make_grads(params, drift, t, gen)
        scale = grad_scale(t)
        inf = found_inf(t)
        gs = None if scale is None else torch.tensor(scale, device=device)
        fi = None if inf is None else torch.tensor(inf, device=device)
        if gs is not None:
            grads = [(g.double() * scale).to(g.dtype) for g in grads]
        ref_grads = deep_clone(grads)
        native_fn(*case.args(params, grads, state, step_t), gs, fi)
        ref_fn(*case.args(ref[0], ref_grads, ref[1], ref[2]), gs, fi)
        assert_lists_equal(params, ref[0], f"step {t}: params")
        assert_lists_equal(grads, ref_grads, f"step {t}: grads")
        for k in case.state:
            assert_lists_equal(state[k], ref[1][k], f"step {t}: {k}")
        assert_lists_equal(step_t, ref[2], f"step {t}: steps")
    return params, state, step_t


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_native_equals_reference(case: str, dtype: torch.dtype, device: str, gen) -> None:
    shapes = list(SHAPES)
    params, _, _ = run_side_by_side(CASES[case], device, [dtype] * len(shapes), shapes, gen)
    big = params[shapes.index("odd_278011")]
    zeros = (big == 0).float().mean().item()
    if CASES[case].sparse:
        # The rule's threshold is active: some but not all weights are exact zeros.
        assert 0.0 < zeros < 1.0, f"{case}: {zeros:.3f} of the weights are zero"
    else:
        assert zeros < 0.01, f"{case}: {zeros:.3f} of the weights are zero"


@pytest.mark.parametrize("case", ["prox_sgd_mom_wd", "sqrt_t", "rda_center", "irda_retrain"])
@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_in_one_call(case: str, device: str, gen) -> None:
    shapes = ["odd_278011", "conv_64x3x3x3", "transposed", "one"]
    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.float16]
    run_side_by_side(CASES[case], device, dtypes, shapes, gen, steps=20)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_grad_scaler_unscale_and_skip(case: str, dtype: torch.dtype, device: str, gen) -> None:
    """GradScaler's contract: grads unscaled by 1/scale in place; on found_inf the whole step
    (params, state, step counters) is skipped."""
    shapes = ["odd_278011", "strided_view", "empty"]
    _, _, steps = run_side_by_side(
        CASES[case],
        device,
        [dtype] * 3,
        shapes,
        gen,
        steps=12,
        grad_scale=lambda t: 2.0 ** (t % 5 + 4),
        found_inf=lambda t: 1.0 if t % 4 == 3 else 0.0,
    )
    # Skipped steps do not count: 12 steps, 3 of them with found_inf.
    if CASES[case].steps:
        assert [s.item() for s in steps] == [9.0] * 3


@pytest.mark.parametrize("device", DEVICES)
def test_found_inf_leaves_everything_untouched(device: str, gen) -> None:
    case = CASES["irda_retrain_after_50"]
    params, state, steps = make_problem(["odd_278011", "conv_64x3x3x3"], device,
                                        [torch.float32] * 2, gen)
    grads = [torch.randn(p.shape, generator=gen).to(device) for p in params]
    before = deep_clone((params, grads, state, steps))
    inf = torch.ones((), device=device)
    torch.ops.sparseopt.rda_step_(*case.args(params, grads, state, steps), None, inf)
    torch.ops.sparseopt.rda_step_(
        *case.args(params, grads, state, steps), torch.full((), 8.0, device=device), inf
    )
    after = (params, grads, state, steps)
    assert_lists_equal(after[0], before[0], "params")
    assert_lists_equal(after[1], before[1], "grads")
    assert_lists_equal(after[2]["gbar"], before[2]["gbar"], "grad_avgs")
    assert [s.item() for s in steps] == [0.0, 0.0]


@pytest.mark.parametrize("device", DEVICES)
def test_step_counters_count_each_step(device: str, gen) -> None:
    case = CASES["sqrt_t"]
    params, state, steps = make_problem(["one", "empty", "odd_278011"], device,
                                        [torch.float32] * 3, gen)
    for t in range(1, 6):
        grads = [torch.randn(p.shape, generator=gen).to(device) for p in params]
        torch.ops.sparseopt.sqrt_t_prox_sgd_step_(*case.args(params, grads, state, steps))
        assert [s.item() for s in steps] == [float(t)] * 3


@pytest.mark.parametrize("device", DEVICES)
def test_irda_retraining_keeps_zeros_zero(device: str, gen) -> None:
    """iRDA Step 2: a weight that is zero when retraining starts stays exactly zero, whatever
    its gradients, while the nonzero weights keep moving."""
    case = CASES["irda_retrain_after_50"]
    params, state, steps = make_problem(["odd_278011", "conv_64x3x3x3"], device,
                                        [torch.float32] * 2, gen)
    drift = [torch.randn(p.shape, generator=gen).to(device) for p in params]
    zeros_at_50 = None
    for t in range(1, 121):
        grads = [d + torch.randn(p.shape, generator=gen).to(device) for p, d in zip(params, drift)]
        torch.ops.sparseopt.rda_step_(*case.args(params, grads, state, steps))
        if t == 50:
            zeros_at_50 = [p == 0 for p in params]
            values_at_50 = [p.clone() for p in params]
    for p, z, v in zip(params, zeros_at_50, values_at_50):
        assert 0 < z.float().mean() < 1
        assert torch.all(p[z] == 0), "a weight pruned before retraining came back"
        assert not torch.equal(p[~z], v[~z]), "retraining froze the surviving weights"


def test_prox_sgd_without_l1_is_torch_sgd(gen) -> None:
    """l1 = 0: Prox-SGD is SGD (with momentum and weight decay), equal to torch.optim.SGD."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(37, 23), torch.nn.Tanh(), torch.nn.Linear(23, 5))
    twin = deep_clone(model)
    ours = sparseopt.ProxSGD(model.parameters(), lr=0.05, l1=0.0, momentum=0.9,
                             weight_decay=1e-3)
    theirs = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3,
                             foreach=False)
    x = torch.randn(64, 37, generator=gen)
    for _ in range(30):
        for m, opt in ((model, ours), (twin, theirs)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# -- every in-place op of the op table, from its sample arguments ---------------------------
TABLE_OPS = [s for s in sparseopt.ops.SPECS.values() if s.fake is None]


def _tensors_of(args) -> list[torch.Tensor]:
    return [t for a in args for t in (a if isinstance(a, list) else [a])
            if isinstance(t, torch.Tensor)]  # fmt: skip


@pytest.mark.parametrize("spec", TABLE_OPS, ids=[s.name for s in TABLE_OPS])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_every_op_of_the_table_equals_its_reference(spec, dtype, device) -> None:
    """A new row of sparseopt.ops.SPECS is held to its reference here without a new case:
    five calls on its sample arguments (GradScaler on), every tensor bit for bit."""
    args = spec.sample(device, dtype)
    ref = deep_clone(args)
    native = getattr(torch.ops.sparseopt, spec.name)
    for t in range(5):
        native(*args)
        spec.reference(*ref)
        assert_lists_equal(_tensors_of(args), _tensors_of(ref), f"{spec.name} call {t}")

"""OBProx-SG / OBProx-SG+ and pDCA_e: kernels against references, formulas, invariants, the
optimizer classes (eval_params, state_dict, GradScaler) and bad input.

The kernel cases run all SHAPES (empty, one element, 278011 elements, conv weights,
channels_last, transposed and strided views) in ONE op call for 100 steps and require the native
result to equal the reference bit for bit after every step (params, gradients -- unscaled in
place under GradScaler --, state and step counters).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch
from conftest import (
    BAD_LR,
    BAD_NUMBERS,
    DEVICES,
    DTYPES,
    SHAPES,
    assert_lists_equal,
    deep_clone,
    make_grads,
    make_tensor,
    zero_every_7th,
)
from torch import nn

import sparseopt
from sparseopt import reference
from sparseopt._schedules import obproxsg_is_orthant, pdca_betas

NATIVE = sparseopt.ops.extension_loaded()
needs_native = pytest.mark.skipif(not NATIVE, reason="the native extension is not built")
OP_BACKENDS = ["reference"] + (["native"] if NATIVE else [])
STEPS = 100


def _op(backend: str, name: str) -> Callable[..., Any]:
    return getattr(reference if backend == "reference" else torch.ops.sparseopt, name)


# -- kernel cases -------------------------------------------------------------------------------


class Case:
    """One op configuration. ``call(fn, params, grads, iterates, steps, betas, gs, fi)``."""

    def __init__(self, op: str, hyper: dict[str, Any], restart: int | None = None) -> None:
        self.op = op
        self.hyper = hyper
        self.restart = restart

    def call(self, fn, params, grads, iterates, steps, betas, gs=None, fi=None) -> None:
        if self.op == "obproxsg_step_":
            fn(params, grads, steps, *self.hyper.values(), gs, fi)
        else:
            fn(params, grads, iterates, steps, betas, *self.hyper.values(), gs, fi)

    def __repr__(self) -> str:
        return f"{self.op}({', '.join(f'{k}={v}' for k, v in self.hyper.items())})"


CASES = {
    # phases switch at steps 15 (orthant), 36 (prox), 50 (orthant), 71 (prox), 85 (orthant)
    "obproxsg": Case(
        "obproxsg_step_", dict(lr=0.1, l1=0.5, eps=0.0, steps_per_epoch=7, n_p=2, n_o=3)
    ),
    "obproxsg_plus_eps": Case(
        "obproxsg_step_", dict(lr=0.05, l1=0.8, eps=0.02, steps_per_epoch=10, n_p=3, n_o=-1)
    ),
    "obproxsg_prox_only": Case(
        "obproxsg_step_", dict(lr=0.1, l1=0.5, eps=0.0, steps_per_epoch=1, n_p=1, n_o=0)
    ),
    "pdca": Case("pdca_step_", dict(lr=0.05, l1=2.0, theta=3.0, weight_decay=0.0), restart=30),
    "pdca_wd": Case("pdca_step_", dict(lr=0.1, l1=0.5, theta=10.0, weight_decay=1e-2), restart=200),
}


def make_problem(shapes, device, dtypes, gen, restart: int | None):
    params = [make_tensor(s, device, dt, gen) for s, dt in zip(shapes, dtypes)]
    for p in params:  # exact zeros in the starting point
        zero_every_7th(p)
    iterates = [deep_clone(p) for p in params]  # x_0 = y_0
    steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in params]
    betas = torch.tensor(pdca_betas(restart or 1), dtype=torch.float64, device=device)
    return params, iterates, steps, betas


def run_side_by_side(
    case: Case,
    device: str,
    dtypes: list[torch.dtype],
    shapes: list[str],
    gen: torch.Generator,
    steps: int = STEPS,
    grad_scale: Callable[[int], float | None] = lambda t: None,
    found_inf: Callable[[int], float | None] = lambda t: None,
    check: Callable[[list[torch.Tensor], list[torch.Tensor]], None] | None = None,
):
    params, iterates, step_t, betas = make_problem(shapes, device, dtypes, gen, case.restart)
    ref = deep_clone((params, iterates, step_t))
    drift = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device) for p in params]
    native_fn = getattr(torch.ops.sparseopt, case.op)
    ref_fn = getattr(reference, case.op)
    for t in range(steps):
        grads = make_grads(params, drift, t, gen)
        scale, inf = grad_scale(t), found_inf(t)
        gs = None if scale is None else torch.tensor(scale, device=device)
        fi = None if inf is None else torch.tensor(inf, device=device)
        if gs is not None:
            grads = [(g.double() * scale).to(g.dtype) for g in grads]
        ref_grads = deep_clone(grads)
        before = [p.clone() for p in params]
        case.call(native_fn, params, grads, iterates, step_t, betas, gs, fi)
        case.call(ref_fn, ref[0], ref_grads, ref[1], ref[2], betas, gs, fi)
        assert_lists_equal(params, ref[0], f"step {t}: params")
        assert_lists_equal(grads, ref_grads, f"step {t}: grads")
        if case.op == "pdca_step_":
            assert_lists_equal(iterates, ref[1], f"step {t}: iterates")
        assert_lists_equal(step_t, ref[2], f"step {t}: steps")
        if check is not None:
            check(before, params)
    return params, iterates, step_t


@needs_native
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_native_equals_reference(case: str, dtype: torch.dtype, device: str, gen) -> None:
    shapes = list(SHAPES)
    params, iterates, _ = run_side_by_side(CASES[case], device, [dtype] * len(shapes), shapes, gen)
    sparse = iterates if CASES[case].op == "pdca_step_" else params
    big = sparse[shapes.index("odd_278011")]
    zeros = (big == 0).float().mean().item()
    # The prox/projection is active in every case: some but not all entries are exact zeros.
    assert 0.0 < zeros < 1.0, f"{case}: {zeros:.3f} of the weights are zero"


@needs_native
@pytest.mark.parametrize("case", ["obproxsg", "pdca_wd"])
@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_in_one_call(case: str, device: str, gen) -> None:
    shapes = ["odd_278011", "conv_64x3x3x3", "transposed", "one"]
    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.float16]
    run_side_by_side(CASES[case], device, dtypes, shapes, gen, steps=40)


@needs_native
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_grad_scaler_unscale_and_skip(case: str, dtype: torch.dtype, device: str, gen) -> None:
    """GradScaler's contract: grads unscaled by 1/scale in place; on found_inf the whole step
    (params, iterates, step counters, hence the phase and the extrapolation) is skipped."""
    shapes = ["odd_278011", "strided_view", "empty"]
    _, _, steps = run_side_by_side(
        CASES[case], device, [dtype] * 3, shapes, gen, steps=40,
        grad_scale=lambda t: 2.0 ** (t % 5 + 4),
        found_inf=lambda t: 1.0 if t % 4 == 3 else 0.0,
    )  # fmt: skip
    assert [s.item() for s in steps] == [30.0] * 3  # 40 steps, 10 skipped


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("name", ["obproxsg_step_", "pdca_step_"])
def test_found_inf_leaves_everything_untouched(backend: str, name: str, gen) -> None:
    case = CASES["obproxsg" if name == "obproxsg_step_" else "pdca"]
    params, iterates, steps, betas = make_problem(
        ["odd_278011", "conv_64x3x3x3"], "cpu", [torch.float32] * 2, gen, case.restart
    )
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    before = deep_clone((params, grads, iterates))
    inf = torch.ones(())
    case.call(_op(backend, name), params, grads, iterates, steps, betas, None, inf)
    case.call(_op(backend, name), params, grads, iterates, steps, betas, torch.full((), 8.0), inf)
    assert_lists_equal(params, before[0], "params")
    assert_lists_equal(grads, before[1], "grads")
    assert_lists_equal(iterates, before[2], "iterates")
    assert [s.item() for s in steps] == [0.0, 0.0]


# -- OBProx-SG: schedule, formulas, orthant invariants -------------------------------------------


def test_schedule_counts_epochs() -> None:
    # n_p = 2, n_o = 3, 4 steps per epoch: epochs 0-1 prox, 2-4 orthant, 5-6 prox, ...
    phases = [obproxsg_is_orthant(t, 4, 2, 3) for t in range(1, 4 * 12 + 1)]
    epochs = [phases[4 * e : 4 * e + 4] for e in range(12)]
    assert all(len(set(e)) == 1 for e in epochs)  # the phase only changes at epoch boundaries
    assert [e[0] for e in epochs] == [False, False, True, True, True] * 2 + [False, False]
    # OBProx-SG+: n_p epochs of Prox-SG, then orthant for ever
    plus = [obproxsg_is_orthant(t, 3, 2, -1) for t in range(1, 100)]
    assert plus == [False] * 6 + [True] * 93
    assert not any(obproxsg_is_orthant(t, 1, 1, 0) for t in range(1, 50))


def _np_soft(u: np.ndarray, a: float) -> np.ndarray:
    return np.sign(u) * np.maximum(np.abs(u) - a, 0.0)


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("n_o", [3, -1])
def test_obproxsg_formula(backend: str, n_o: int) -> None:
    """Both phases and the epoch schedule, against numpy float64 written from docs/algorithms.md
    section 6."""
    rng = np.random.default_rng(0)
    n, spe, n_p, lr, lam, eps = 3001, 5, 2, 0.1, 0.3, 0.01
    w = rng.standard_normal(n)
    w[::5] = 0.0
    p, step = torch.tensor(w), torch.zeros((), dtype=torch.float32)
    saw = set()
    for t in range(1, 61):
        g = rng.standard_normal(n) * 0.3 + 0.2 * np.sign(w)
        epoch = (t - 1) // spe
        orthant = epoch >= n_p if n_o < 0 else epoch % (n_p + n_o) >= n_p
        saw.add(orthant)
        if orthant:
            z = np.sign(w)
            gz = np.where(z != 0, g + lam * z, 0.0)
            wh = w - lr * gz
            w = np.where(wh * z > eps, wh, 0.0)
        else:
            w = _np_soft(w - lr * g, lr * lam)
        _op(backend, "obproxsg_step_")([p], [torch.tensor(g)], [step], lr, lam, eps, spe, n_p, n_o)
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-12, atol=1e-14)
        assert np.array_equal(p.numpy() == 0, w == 0), f"step {t}: zeros differ"
    assert saw == {False, True}
    assert step.item() == 60
    assert 0 < (w == 0).mean() < 1


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("eps", [0.0, 0.05])
def test_orthant_step_never_revives_a_zero_nor_flips_a_sign(backend, dtype, eps, gen) -> None:
    """Every element of every shape, over 11 orthant steps with large, sign-hostile gradients."""
    shapes = list(SHAPES)
    params = [make_tensor(s, "cpu", dtype, gen) for s in shapes]
    for p in params:
        zero_every_7th(p)
    steps = [torch.zeros(()) for _ in params]
    fn = _op(backend, "obproxsg_step_")
    for t in range(12):
        # Gradients pushing towards and across zero (3x the weight), noise, some huge values.
        grads = [(3 * p.double() + torch.randn(p.shape, generator=gen, dtype=torch.float64))
                 .to(dtype) for p in params]
        before = [p.clone() for p in params]
        # steps_per_epoch=1, n_p=1, n_o=inf: every step after the first is an orthant step
        if t == 0:
            for s in steps:
                s.fill_(1.0)
        fn(params, grads, steps, 0.2, 0.1, eps, 1, 1, -1)
        for s, b, a in zip(shapes, before, params):
            bd, ad = b.double(), a.double()
            assert torch.all(ad[bd == 0] == 0), f"{s}: a zero became nonzero"
            assert torch.all(ad * bd >= 0), f"{s}: a sign flipped"
            # a kept weight is outside the margin, up to the rounding of fp16/bf16 storage
            margin = eps * (1 - 2**-7) if dtype in (torch.float16, torch.bfloat16) else eps
            assert torch.all((ad == 0) | (ad.abs() > margin)), f"{s}: inside the eps margin"
    big = params[shapes.index("odd_278011")]
    assert (big == 0).float().mean() > 0.5  # the projections did prune


# -- pDCA_e: the paper's Algorithm 2, its extrapolation weights, restart, theta -> 0 -----------
# (docs/algorithms.md section 7)


def _paper_pdca(x0, grad_at, n_steps, lr, lam, theta, restart):
    """Algorithm 2 (pDCA_e for r_exp) in numpy float64, written from the paper, not the package.

    Loop index t = 0, 1, ...: xi^t (line 4), beta_t = (k_{t-1} - 1)/k_t (line 5), k_{t+1} (line 6),
    y_t = x_t + beta_t (x_t - x_{t-1}) (line 7), x_{t+1} by the case split of line 8 (with the
    lambda the note drops: the prox of lr*lam*theta*|.|). Fixed restart as in the paper:
    k_{t-1} = k_t = 1 whenever t is a multiple of ``restart``; t = 0 is the start itself.
    ``grad_at(t, y)`` is grad f(y_t). Step n of an optimizer is the iteration that makes x_n,
    after which it holds y_n: returns ys[n-1] = y_n, xs[n-1] = x_n, betas[n-1] = beta_n for
    n = 1 .. n_steps."""
    x_prev, x = x0.copy(), x0.copy()  # x^{-1} = x^0
    k_prev, k = 1.0, 1.0  # k_{-1} = k_0 = 1
    ys, xs, betas = [], [], []
    for t in range(n_steps + 1):
        if t % restart == 0:
            k_prev, k = 1.0, 1.0
        xi = np.sign(x) * theta * (1 - np.exp(-theta * np.abs(x)))
        beta = (k_prev - 1) / k
        k_prev, k = k, (1 + math.sqrt(1 + 4 * k * k)) / 2
        y = x + beta * (x - x_prev)
        if t > 0:
            ys.append(y)
            xs.append(x)
            betas.append(beta)
        if t == n_steps:
            break
        u = y - lr * (grad_at(t, y) - lam * xi)
        a = lr * lam * theta
        x_prev, x = x, np.where(u > a, u - a, np.where(u < -a, u + a, 0.0))
    return ys, xs, betas


def _paper_betas(n_steps: int, restart: int) -> list[float]:
    """beta_1 .. beta_{n_steps} of the paper's loop (a problem with zero gradient and penalty)."""
    return _paper_pdca(np.zeros(1), lambda t, y: 0 * y, n_steps, 0.0, 0.0, 1.0, restart)[2]


def test_pdca_betas_follow_the_paper_recursion() -> None:
    betas = _paper_betas(30, 200)
    # the weights after steps 1, 2, 3, 4 (Wen, Chen & Pong's indexing: y_n uses beta_n)
    assert betas[:4] == pytest.approx([0.0, 0.2818, 0.4340, 0.5311], abs=5e-5)
    assert betas[0] == 0.0
    # the table the kernels index with t % restart holds exactly those weights
    for restart in (1, 2, 5, 40):
        table = pdca_betas(restart)
        assert len(table) == restart
        paper = _paper_betas(3 * restart + 2, restart)
        assert [table[t % restart] for t in range(1, len(paper) + 1)] == paper
    # restart after step n = 5: steps 5, 6, 7 use 0, 0, 0.2818, as y_0 = x_0 and steps 1, 2 do
    assert _paper_betas(7, 5)[4:] == [0.0, 0.0, betas[1]]
    assert pdca_betas(1) == [0.0]
    assert all(0 <= b < 1 for b in pdca_betas(500))


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("restart,wd", [(7, 0.0), (200, 0.01), (1, 0.0)])
def test_pdca_formula(backend: str, restart: int, wd: float) -> None:
    rng = np.random.default_rng(1)
    n, lr, lam, theta = 2001, 0.1, 0.4, 2.5
    w = rng.standard_normal(n)
    w[::5] = 0.0
    grads = [rng.standard_normal(n) * 0.3 + 0.2 for _ in range(30)]
    ys, xs, _ = _paper_pdca(w, lambda t, y: grads[t] + wd * y, len(grads), lr, lam, theta,
                            restart)  # fmt: skip
    p, x, step = torch.tensor(w), torch.tensor(w), torch.zeros((), dtype=torch.float32)
    betas = torch.tensor(pdca_betas(restart), dtype=torch.float64)
    for t, g in enumerate(grads):
        _op(backend, "pdca_step_")([p], [torch.tensor(g)], [x], [step], betas, lr, lam, theta, wd)
        np.testing.assert_allclose(x.numpy(), xs[t], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(p.numpy(), ys[t], rtol=1e-12, atol=1e-13)
        assert np.array_equal(x.numpy() == 0, xs[t] == 0)
    assert 0 < (xs[-1] == 0).mean() < 1


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_pdca_extrapolation_weights_after_each_step_and_restart(backend: str) -> None:
    """The point written by step n is x_n + beta_n (x_n - x_{n-1}) with the paper's beta_n:
    0, 0.2818, 0.4340, 0.5311 after steps 1-4; restart=5: steps 5, 6, 7 use 0, 0, 0.2818."""
    restart, n_steps = 5, 17
    expected = _paper_betas(n_steps, restart)
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x, step = p.clone(), torch.zeros((), dtype=torch.float32)
    betas = torch.tensor(pdca_betas(restart), dtype=torch.float64)
    for n in range(n_steps):
        x_prev = x.clone()
        g = torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64)
        _op(backend, "pdca_step_")([p], [g], [x], [step], betas, 0.1, 0.0, 1.0, 0.0)
        assert not torch.equal(x, x_prev)
        torch.testing.assert_close(p, x + expected[n] * (x - x_prev), rtol=0, atol=1e-15)


_PAPER_RUN = dict(lr=0.1, lam=0.05, theta=5.0, restart=40)


def _paper_problem(shapes, seed: int = 0):
    """x0 per shape and grad f(y) at loop index t: a diagonal quadratic plus noise drawn from a
    generator seeded by (seed, t, tensor), all float64."""
    rng = np.random.default_rng(seed)
    x0s = [rng.standard_normal(s) * 0.5 for s in shapes]
    curv = [rng.uniform(0.5, 2.0, s) for s in shapes]
    centre = [rng.standard_normal(s) * 0.3 for s in shapes]

    def grad_at(i: int):
        def grad(t: int, y: np.ndarray) -> np.ndarray:
            noise = np.random.default_rng([seed, t, i]).standard_normal(y.shape)
            return curv[i] * (y - centre[i]) + 0.2 * noise

        return grad

    return x0s, [grad_at(i) for i in range(len(shapes))]


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_pdca_optimizer_equals_the_papers_algorithm_over_300_steps(backend: str) -> None:
    """sparseopt.PDCA against _paper_pdca for 300 steps with restarts at 40 (seven restarts):
    y (the parameters), x (the state, sparse_params()) and eval_params() after every step."""
    if backend == "native" and not NATIVE:
        pytest.skip("the native extension is not built")
    n_steps, hp = 300, _PAPER_RUN
    shapes = [(24, 30), (6, 4, 3, 3)]
    x0s, grads = _paper_problem(shapes)
    paper = [_paper_pdca(x0, g, n_steps, hp["lr"], hp["lam"], hp["theta"], hp["restart"])
             for x0, g in zip(x0s, grads)]  # fmt: skip
    params = [nn.Parameter(torch.tensor(x0)) for x0 in x0s]
    opt = sparseopt.PDCA(params, lr=hp["lr"], l1=hp["lam"], theta=hp["theta"],
                         restart=hp["restart"], backend=backend)  # fmt: skip
    for t in range(n_steps):
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g(t, p.detach().numpy()))
        opt.step()
        ys = [p.detach().clone() for p in params]
        for i, (y, x) in enumerate(zip(ys, opt.sparse_params())):
            ys_i, xs_i, _ = paper[i]
            np.testing.assert_allclose(y.numpy(), ys_i[t], rtol=1e-12, atol=5e-14)
            np.testing.assert_allclose(x.numpy(), xs_i[t], rtol=1e-12, atol=5e-14)
            assert np.array_equal(x.numpy() == 0, xs_i[t] == 0)
        with opt.eval_params():
            for i, p in enumerate(params):
                np.testing.assert_allclose(p.detach().numpy(), paper[i][1][t], rtol=1e-12,
                                           atol=5e-14)  # fmt: skip
        assert all(torch.equal(p.detach(), y) for p, y in zip(params, ys))
    x_end = paper[0][1][-1]
    assert 0.05 < (x_end == 0).mean() < 0.95  # the penalty prunes, and not everything
    assert paper[0][2][hp["restart"] - 1] == 0.0 and paper[0][2][hp["restart"] - 2] > 0.9


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_pdca_checkpoint_of_the_lagging_version_loads_and_continues_as_the_paper(
    backend: str,
) -> None:
    """A state dict saved by the version whose step t extrapolated with beta_{t-1} has the same
    keys: it loads, and the resumed steps extrapolate with the paper's beta_t (README)."""
    restart, saved_at = 7, 10
    x0s, grads = _paper_problem([(5, 8)], seed=3)
    hp = dict(lr=0.1, l1=0.05, theta=5.0, restart=restart, backend=backend)
    old_p = nn.Parameter(torch.tensor(x0s[0]))
    old = sparseopt.PDCA([old_p], **hp)
    table = old._beta_table(restart, old_p.device)
    # the old kernel read betas[(t - 1) % restart]: the same as the rolled table at t % restart
    old._betas[(restart, old_p.device)] = torch.roll(table, 1)
    for t in range(saved_at):
        old_p.grad = torch.from_numpy(grads[0](t, old_p.detach().numpy()))
        old.step()
    saved = copy.deepcopy(old.state_dict())
    assert sorted(saved["state"][0]) == ["step", "x"] and float(saved["state"][0]["step"]) == 10

    p = nn.Parameter(old_p.detach().clone())
    opt = sparseopt.PDCA([p], **hp)
    opt.load_state_dict(saved)
    expected = _paper_betas(saved_at + 8, restart)
    for t in range(saved_at, saved_at + 8):
        x_prev = opt.state[p]["x"].clone()
        p.grad = torch.from_numpy(grads[0](t, p.detach().numpy()))
        opt.step()
        x = opt.sparse_params()[0]
        # step t + 1 of the paper: beta_{t+1} (0 after step 14, the restart)
        torch.testing.assert_close(p.detach(), x + expected[t] * (x - x_prev), rtol=0,
                                   atol=1e-15)  # fmt: skip
    assert float(opt.state[p]["step"]) == saved_at + 8


def _lsq(n: int = 60, d: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    A = torch.tensor(rng.standard_normal((n, d)) / math.sqrt(n))
    b = torch.tensor(rng.standard_normal(n))
    return A, b


def _grad(A, b, w):
    return A.T @ (A @ w - b)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_pdca_theta_to_zero_is_proximal_gradient(backend: str) -> None:
    """theta -> 0 with l1 * theta = c fixed: pDCA_e is the proximal gradient method with l1
    weight c. Without extrapolation (restart=1) that is Prox-SGD; with it, FISTA-style
    extrapolated proximal gradient. The gap shrinks like theta."""
    A, b = _lsq()
    c, lr = 0.05, 0.25  # lr < 1/L (||A||^2 is about 3.3)
    w0 = torch.tensor(np.random.default_rng(3).standard_normal(A.shape[1]))

    def run_pdca(theta: float, restart: int) -> torch.Tensor:
        p = nn.Parameter(w0.clone().unsqueeze(0))  # dim 2: covered by the l1 term
        opt = sparseopt.PDCA([p], lr=lr, l1=c / theta, theta=theta, restart=restart,
                             backend=backend)
        for _ in range(50):
            p.grad = _grad(A, b, p.detach()[0]).unsqueeze(0)
            opt.step()
        return opt.sparse_params()[0][0].clone()

    # plain proximal gradient: Prox-SGD with l1 = c
    q = nn.Parameter(w0.clone().unsqueeze(0))
    prox = sparseopt.ProxSGD([q], lr=lr, l1=c, backend=backend)
    for _ in range(50):
        q.grad = _grad(A, b, q.detach()[0]).unsqueeze(0)
        prox.step()
    # extrapolated proximal gradient with the same beta sequence, written out
    y, x = w0.clone(), w0.clone()
    betas = _paper_betas(50, 200)
    for n in range(50):
        x_new = torch.sign(y - lr * _grad(A, b, y)) * torch.clamp(
            (y - lr * _grad(A, b, y)).abs() - lr * c, min=0)
        y, x = x_new + betas[n] * (x_new - x), x_new  # step n + 1 ends with beta_{n+1}
    gaps = []
    for theta in (1e-2, 1e-4, 1e-6):
        gap1 = (run_pdca(theta, 1) - q.detach()[0]).abs().max().item()
        gap2 = (run_pdca(theta, 200) - x).abs().max().item()
        gaps.append((gap1, gap2))
    assert gaps[-1][0] < 1e-5 and gaps[-1][1] < 1e-5, gaps
    for k in (0, 1):  # converges like theta
        assert gaps[0][k] > 30 * gaps[1][k] > 900 * gaps[2][k], gaps
    assert (x == 0).any() and (x != 0).any()


# -- the optimizer classes ----------------------------------------------------------------------


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(13, 11), nn.Tanh(), nn.Linear(11, 3))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 13, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


OPTIMS = {
    "OBProxSG": lambda ps, **kw: sparseopt.OBProxSG(ps, lr=0.1, l1=0.05, n_p=1, n_o=2,
                                                    steps_per_epoch=5, **kw),
    "OBProxSGPlus": lambda ps, **kw: sparseopt.OBProxSGPlus(ps, lr=0.1, l1=0.05, n_p=2,
                                                            steps_per_epoch=4, eps=1e-3, **kw),
    "PDCA": lambda ps, **kw: sparseopt.PDCA(ps, lr=0.1, l1=0.02, theta=5.0, restart=7,
                                            weight_decay=1e-3, **kw),
}


@pytest.mark.parametrize("name", list(OPTIMS))
def test_native_optimizer_equals_reference_optimizer(name: str) -> None:
    a, b = _model(), _model()
    opt_a = OPTIMS[name](a.parameters())
    opt_b = OPTIMS[name](b.parameters(), backend="reference")
    _train(a, opt_a, 40)
    _train(b, opt_b, 40)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)
    w = a[0].weight if name != "PDCA" else opt_a.state[a[0].weight]["x"]
    assert 0 < (w == 0).float().mean() < 1
    assert (a[0].bias != 0).all()  # biases are not covered by default: no zeros, no freezing


@pytest.mark.parametrize("name", list(OPTIMS))
def test_state_dict_round_trip_resumes_bit_exactly(name: str) -> None:
    model = _model()
    opt = OPTIMS[name](model.parameters())
    _train(model, opt, 13)  # stops mid-epoch and mid restart period
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    _train(model, opt, 25, seed=1)  # crosses phase boundaries / a restart

    twin = _model()
    twin.load_state_dict(saved_model)
    opt2 = OPTIMS[name](twin.parameters())
    opt2.load_state_dict(saved_opt)
    _train(twin, opt2, 25, seed=1)
    for x, y in zip(model.parameters(), twin.parameters()):
        assert torch.equal(x, y)
    for p, q in zip(model.parameters(), twin.parameters()):
        for key, value in opt.state[p].items():
            assert torch.equal(value, opt2.state[q][key]), key


def test_obproxsg_phase_and_orthant_freezes_zeros_in_training() -> None:
    model = _model()
    opt = sparseopt.OBProxSGPlus(model.parameters(), lr=0.1, l1=0.05, n_p=1, steps_per_epoch=10)
    assert opt.phase() == "prox"
    _train(model, opt, 10)
    assert opt.phase() == "orthant" and opt.phase(step=3) == "prox"
    zeros = [(p == 0) for p in model.parameters()]
    signs = [torch.sign(p.detach()) for p in model.parameters()]
    _train(model, opt, 30, seed=2)
    for p, z, s in zip(model.parameters(), zeros, signs):
        if p.dim() > 1:
            assert torch.all(p[z] == 0)
            assert torch.all(torch.sign(p.detach()) * s >= 0)
    assert sparseopt.OBProxSG(model.parameters(), lr=0.1, l1=0.1, n_p=2, n_o=1,
                              steps_per_epoch=3).phase(step=7) == "orthant"


def test_pdca_eval_params_swaps_in_x_and_restores_y() -> None:
    model = _model()
    opt = OPTIMS["PDCA"](model.parameters())
    _train(model, opt, 12)  # restart=7: step 12 extrapolates with beta_5 = 0.60
    params = list(model.parameters())
    ys = [p.detach().clone() for p in params]
    xs = [opt.state[p]["x"].clone() for p in params]
    assert not all(torch.equal(x, y) for x, y in zip(xs, ys))  # extrapolated: y != x
    assert all(torch.equal(a, b) for a, b in zip(opt.sparse_params(), xs))
    with opt.eval_params():
        for p, x in zip(params, xs):
            assert torch.equal(p.detach(), x)
        assert (model[0].weight == 0).any()  # the sparse iterate is what one evaluates
    for p, y in zip(params, ys):
        assert torch.equal(p.detach(), y)
    # restored on an exception too
    with pytest.raises(KeyError):
        with opt.eval_params():
            raise KeyError("boom")
    for p, y in zip(params, ys):
        assert torch.equal(p.detach(), y)
    assert opt.sparse_params()[0] is opt.state[params[0]]["x"]


def test_pdca_eval_params_misuse_is_an_error_and_changes_nothing() -> None:
    model = _model()
    opt = OPTIMS["PDCA"](model.parameters())
    _train(model, opt, 5)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    ys = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    with opt.eval_params():
        with pytest.raises(RuntimeError, match="cannot be nested"):
            with opt.eval_params():
                pass
        inside = [p.detach().clone() for p in params]
        with pytest.raises(RuntimeError, match=r"step\(\) was called inside .*eval_params"):
            opt.step()
        for p, v in zip(params, inside):
            assert torch.equal(p.detach(), v)
    for p, y in zip(params, ys):
        assert torch.equal(p.detach(), y)
    after = opt.state_dict()
    for k, s in state["state"].items():
        for key, v in s.items():
            assert torch.equal(after["state"][k][key], v)
    opt.step()  # fine again outside the block


def test_pdca_before_any_step_has_x_equal_to_the_parameter() -> None:
    p = nn.Parameter(torch.randn(3, 4))
    opt = sparseopt.PDCA([p], lr=0.1, l1=0.1, theta=1.0)
    assert opt.sparse_params()[0] is not p and torch.equal(opt.sparse_params()[0], p.detach())
    with opt.eval_params():
        pass


@pytest.mark.parametrize("name", list(OPTIMS))
def test_amp_grad_scaler_skips_inf_steps(name: str) -> None:
    """With torch.amp.GradScaler: an inf gradient skips the step entirely (params, state, step
    counters); finite steps run with the unscaled gradients."""
    model, twin = _model(), _model()
    opt, opt_twin = OPTIMS[name](model.parameters()), OPTIMS[name](twin.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    gen = torch.Generator().manual_seed(0)
    for t in range(12):
        x = torch.randn(32, 13, generator=gen)
        opt.zero_grad()
        scaler.scale(model(x).square().mean()).backward()
        if t in (4, 9):
            model[0].weight.grad[0, 0] = float("inf")
        before = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in model.parameters()]
        scaler.step(opt)
        scaler.update()
        if t in (4, 9):
            for p, v in zip(model.parameters(), before[1]):
                assert torch.equal(p.detach(), v)
            for k, s in before[0]["state"].items():
                for key, v in s.items():
                    assert torch.equal(opt.state_dict()["state"][k][key], v)
        else:
            opt_twin.zero_grad()
            twin(x).square().mean().backward()
            opt_twin.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert opt.state[model[0].weight]["step"].item() == 10


# opcheck, the fake kernels and the schemas of both ops: tests/test_ops.py, from the op table.


# -- bad input ----------------------------------------------------------------------------------


def _params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]


CTORS = {
    "OBProxSG": (sparseopt.OBProxSG, dict(lr=0.1, l1=1e-3, steps_per_epoch=10)),
    "OBProxSGPlus": (sparseopt.OBProxSGPlus, dict(lr=0.1, l1=1e-3, steps_per_epoch=10)),
    "PDCA": (sparseopt.PDCA, dict(lr=0.1, l1=1e-3, theta=5.0)),
}
BAD = {
    "OBProxSG": {
        "lr": BAD_LR, "l1": BAD_NUMBERS, "eps": BAD_NUMBERS,
        "n_p": [0, -1, 1.5, float("inf"), True, "5"],
        "n_o": [0, -1, 2.5, float("nan"), "inf"],
        "steps_per_epoch": [0, -3, 10.0, float("inf")],
    },
    "OBProxSGPlus": {
        "lr": BAD_LR, "l1": BAD_NUMBERS, "eps": BAD_NUMBERS, "n_p": [0, 2.0],
        "steps_per_epoch": [0, 1.5],
    },
    "PDCA": {
        "lr": BAD_LR, "l1": BAD_NUMBERS, "theta": BAD_NUMBERS + [0.0, -0.0],
        "weight_decay": BAD_NUMBERS, "restart": [0, -5, 1.0, 200.5, True, float("inf")],
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(CTORS))
def test_bad_hyperparameters_are_rejected_with_the_accepted_range(name: str) -> None:
    cls, good = CTORS[name]
    for key, values in BAD[name].items():
        for bad in values:
            with pytest.raises(ValueError, match=rf"{name}: .*{key}.*accepted"):
                cls(_params(), **{**good, key: bad})
    for key in good:
        with pytest.raises(ValueError, match=rf"{name}: {key} is required; e\.g\. {name}\("):
            cls(_params(), **{k: v for k, v in good.items() if k != key})
    with pytest.raises(ValueError, match="backend"):
        cls(_params(), **good, backend="cuda")
    with pytest.raises(ValueError, match="l1_on"):
        cls(_params(), **good, l1_on="biases")
    with pytest.raises(ValueError, match=r"complex dtype torch.complex64.*accepted: float32"):
        cls([nn.Parameter(torch.zeros(3, dtype=torch.complex64))], **good)
    if name == "PDCA":
        with pytest.raises(ValueError, match="theta > 0"):
            cls(_params(), **{**good, "theta": 0.0})
    else:
        with pytest.raises(ValueError, match="steps_per_epoch.*int >= 1"):
            cls(_params(), **{**good, "steps_per_epoch": 0})


def _snapshot(opt, params):
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def _assert_unchanged(opt, params, snap) -> None:
    values, state = snap
    for p, v in zip(params, values):
        assert torch.equal(p.detach(), v)
    now = opt.state_dict()
    assert now["state"].keys() == state["state"].keys()
    for k, s in state["state"].items():
        for key, v in s.items():
            assert torch.equal(now["state"][k][key], v)


@pytest.mark.parametrize("name", list(CTORS))
def test_bad_step_changes_nothing(name: str) -> None:
    cls, good = CTORS[name]
    dense, emb = _params(), nn.Parameter(torch.randn(10, 3))
    opt = cls([{"params": dense}, {"params": [emb]}], **good)
    for p in dense + [emb]:
        p.grad = torch.randn_like(p)
    opt.step()
    snap = _snapshot(opt, dense + [emb])
    emb.grad = torch.randn_like(emb).to_sparse()  # sparse gradient in a later group
    with pytest.raises(RuntimeError, match=r"param_groups\[1\].*sparse gradient"):
        opt.step()
    _assert_unchanged(opt, dense + [emb], snap)
    emb.grad = torch.randn_like(emb)
    # hyperparameters edited to bad values after construction
    edits = {"lr": -0.1, "l1": float("nan")}
    edits.update({"theta": 0.0, "restart": 0} if name == "PDCA"
                 else {"n_p": 0, "steps_per_epoch": 0, "eps": -1e-3})
    for key, bad in edits.items():
        old = opt.param_groups[1][key]
        opt.param_groups[1][key] = bad
        with pytest.raises(ValueError, match=rf"invalid {key}.*accepted"):
            opt.step()
        _assert_unchanged(opt, dense + [emb], snap)
        opt.param_groups[1][key] = old


@pytest.mark.parametrize("name", list(CTORS))
def test_state_on_another_device_names_the_parameter(name: str) -> None:
    cls, good = CTORS[name]
    model = nn.Linear(3, 2)
    opt = cls(model.parameters(), **good)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    state = opt.state_dict()
    moved = nn.Linear(3, 2, device="meta")
    opt2 = cls(moved.parameters(), **good)
    opt2.load_state_dict(state)  # load_state_dict moves state to the parameters' device
    assert all(v.device.type == "meta" for v in opt2.state[moved.weight].values())
    for key, value in list(opt.state[model.weight].items()):
        opt.state[model.weight][key] = value.to("meta")
    snap = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"state '\w+' of parameter 0 .* is on meta but the "
                                           r"parameter is on cpu"):
        opt.step()
    for p, v in zip(model.parameters(), snap):
        assert torch.equal(p.detach(), v)


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_op_rejects_bad_scalars_before_writing(backend: str) -> None:
    ps = [torch.randn(5, 3), torch.randn(7)]
    gs = [torch.randn_like(p) for p in ps]
    xs = [p.clone() for p in ps]
    before = [p.clone() for p in ps]
    steps = [torch.zeros(()) for _ in ps]
    betas = torch.tensor(pdca_betas(4), dtype=torch.float64)
    ob, pd = _op(backend, "obproxsg_step_"), _op(backend, "pdca_step_")
    bad_ob = [
        ((-0.1, 0.1, 0.0, 1, 1, 1), r"lr = -0.1 is invalid; accepted: a finite float >= 0"),
        ((0.1, math.nan, 0.0, 1, 1, 1), "l1 = nan is invalid"),
        ((0.1, 0.1, -1.0, 1, 1, 1), r"eps = -1(\.0)? is invalid"),
        ((0.1, 0.1, 0.0, 0, 1, 1), "steps_per_epoch = 0 is invalid; accepted: an int >= 1"),
        ((0.1, 0.1, 0.0, 1, 0, 1), "n_p = 0 is invalid"),
        ((0.1, 0.1, 0.0, 1, 1, -2), "n_o = -2 is invalid"),
    ]
    for args, match in bad_ob:
        with pytest.raises(RuntimeError, match=match):
            ob(ps, gs, steps, *args)
    bad_pd = [
        ((betas, 0.1, 0.1, 0.0, 0.0), r"theta = 0(\.0)? is invalid; accepted: a finite float > 0"),
        ((betas, 0.1, -1.0, 1.0, 0.0), r"l1 = -1(\.0)? is invalid"),
        ((betas, 0.1, 0.1, 1.0, math.inf), "weight_decay = inf is invalid"),
        ((betas.float(), 0.1, 0.1, 1.0, 0.0), "betas must be a contiguous 1-D float64"),
        ((betas[:0], 0.1, 0.1, 1.0, 0.0), "betas must be"),
    ]
    if backend == "reference":  # the dispatcher sends any call with a meta tensor to the fake
        bad_pd.append(((betas.to("meta"), 0.1, 0.1, 1.0, 0.0), "betas is on meta"))
    for args, match in bad_pd:
        with pytest.raises(RuntimeError, match=match):
            pd(ps, gs, xs, steps, *args)
    with pytest.raises(RuntimeError, match="iterates has 1 tensors but params has 2"):
        pd(ps, gs, xs[:1], steps, betas, 0.1, 0.1, 1.0, 0.0)
    with pytest.raises(RuntimeError, match=r"iterates\[1\] has dtype"):
        pd(ps, gs, [xs[0], xs[1].double()], steps, betas, 0.1, 0.1, 1.0, 0.0)
    with pytest.raises(RuntimeError, match="sparse gradients are not"):
        ob(ps, [gs[0].to_sparse(), gs[1]], steps, 0.1, 0.1, 0.0, 1, 1, 1)
    for p, b in zip(ps, before):
        assert torch.equal(p, b)
    assert [s.item() for s in steps] == [0.0, 0.0]


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_orthant_step_keeps_zeros_under_nan_and_inf_gradients(backend: str) -> None:
    """A zero stays exactly zero whatever its gradient; a diverged nonzero weight shows NaN
    instead of hiding behind a zero."""
    w = torch.tensor([0.0, -0.0, 0.0, 1.0, -1.0, 0.5])
    g = torch.tensor([math.nan, math.inf, -math.inf, math.nan, 0.1, 100.0])
    steps = [torch.ones(())]  # the next step is t = 2: an orthant step below
    _op(backend, "obproxsg_step_")([w], [g], steps, 0.1, 0.01, 0.0, 1, 1, -1)
    assert torch.equal(w[:3], torch.zeros(3))
    assert math.isnan(w[3].item())
    assert w[4].item() == pytest.approx(-1.0 - 0.1 * (0.1 - 0.01))
    assert w[5].item() == 0.0  # would cross zero: projected, not flipped


def test_pdca_deepcopy_and_pickle_keep_working() -> None:
    model = _model()
    opt = OPTIMS["PDCA"](model.parameters())
    _train(model, opt, 3)
    twin_model = copy.deepcopy(model)
    twin = OPTIMS["PDCA"](twin_model.parameters())
    twin.load_state_dict(copy.deepcopy(opt).state_dict())
    _train(model, opt, 4, seed=3)
    _train(twin_model, twin, 4, seed=3)
    for a, b in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(a, b)
    clone = copy.deepcopy(opt)
    with clone.eval_params():
        pass


def _pdca_special_values(dtype: torch.dtype) -> torch.Tensor:
    """x over the whole range of exp(-theta |x|): zeros, subnormals, |x| from 1e-30 to 1e30
    (arguments from -0 down past the clamp at -40 and past float's underflow), inf, NaN."""
    mags = torch.logspace(-30, 30, 601, dtype=torch.float64)
    near_clamp = torch.linspace(7.0, 9.0, 41, dtype=torch.float64)  # theta |x| around 40
    special = torch.tensor([0.0, -0.0, 1e-45, -1e-40, 1e-310, -5e-324, float("inf"),
                            float("-inf"), float("nan")], dtype=torch.float64)
    x = torch.cat([mags, -mags, near_clamp, -near_clamp, special])
    return x.to(dtype)


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("theta", [1e-300, 1e-50, 1e300])
def test_pdca_theta_that_rounds_to_zero_or_inf(dtype: torch.dtype, theta: float) -> None:
    """A theta that rounds to 0 or inf in float makes theta*|x| a NaN for x = inf or 0 (0 * inf,
    a NaN with the sign bit set on x86): exp's clamp takes it to 40 as the reference does.
    (Found by the fuzzer in a first version that clamped on the bits.)"""
    x = torch.tensor([float("inf"), float("-inf"), 0.0, -0.0, 1.0, -1e-30, float("nan")] * 5,
                     dtype=dtype)
    betas = torch.tensor(pdca_betas(3), dtype=torch.float64)
    sides = []
    for fn in (torch.ops.sparseopt.pdca_step_, reference.pdca_step_):
        p, g, it = torch.zeros_like(x), torch.ones_like(x), x.clone()
        fn([p], [g], [it], [torch.zeros(())], betas, 0.5, 0.25, theta, 0.0, None)
        sides.append((p, it))
    for a, b in zip(*sides):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(a.signbit()[~a.isnan()], b.signbit()[~b.isnan()])


@needs_native
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("length", [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129,
                                    1303])
def test_pdca_native_equals_reference_over_the_whole_range(dtype: torch.dtype,
                                                            length: int) -> None:
    """The vectorised CPU loop runs the rule on 32 (8 for float64) lanes at a time, in staged
    blocks of 256 bytes of each array (64 floats, 128 16-bit elements, 32 doubles), and its last
    < 32 (8) elements through a padded copy: every value class, every length around a vector and
    a block, a misaligned start (a view at offset 1), inf/NaN gradients, weight decay and
    GradScaler -- bit for bit (NaN for NaN, and the sign of every zero); bfloat16's lanes hold
    their elements out of order."""
    gen = torch.Generator().manual_seed(length)
    xs = _pdca_special_values(dtype)
    reps = -(-(length + 1) // xs.numel())
    x_all = xs.repeat(reps)[torch.randperm(xs.numel() * reps, generator=gen)][: length + 1]
    g_all = torch.randn(length + 1, generator=gen, dtype=torch.float64).to(dtype)
    g_all[::5] = torch.tensor(float("inf"), dtype=dtype)
    g_all[3::7] = torch.tensor(float("nan"), dtype=dtype)
    y_all = (x_all.double() * 0.5 + torch.randn(length + 1, generator=gen,
                                                 dtype=torch.float64)).to(dtype)
    betas = torch.tensor(pdca_betas(5), dtype=torch.float64)
    for wd, scale in [(0.0, None), (0.01, 1024.0)]:
        sides = []
        for fn in (torch.ops.sparseopt.pdca_step_, reference.pdca_step_):
            p, g, x = y_all.clone()[1:], g_all.clone()[1:], x_all.clone()[1:]  # offset 1
            step = torch.zeros(())
            gs = None if scale is None else torch.tensor(scale)
            for _ in range(3):
                fn([p], [g], [x], [step], betas, 0.05, 0.5, 5.0, wd, gs)
            sides.append((p, g, x))
        for name, a, b in zip(("params", "grads", "iterates"), *sides):
            assert torch.equal(a.isnan(), b.isnan()), name
            keep = ~a.isnan()
            assert torch.equal(a[keep], b[keep]), name
            assert torch.equal(a[keep].signbit(), b[keep].signbit()), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_exp_of_pdca_is_within_its_stated_ulps(dtype: torch.dtype) -> None:
    """csrc/rules/pdca.h: exp_neg_clamped(t) = exp(-t) is accurate to 1.5 ulp of the math type on
    [0, 40] (the kernels equal the reference bit for bit, so the reference is checked): against
    exp in extended precision (numpy longdouble, 64-bit mantissa) on a dense grid and a log
    grid."""
    if np.finfo(np.longdouble).nmant < 63:
        pytest.skip("numpy's longdouble is not x87 extended precision here")
    from sparseopt.reference.obprox_pdca import exp_neg_clamped

    t = torch.cat([torch.linspace(0, 40, 200_001, dtype=torch.float64),
                   torch.logspace(-45, math.log10(40), 20_001, dtype=torch.float64).clamp(max=40)]
                  ).to(dtype)
    got = exp_neg_clamped(t).numpy().astype(np.longdouble)
    exact = np.exp(-t.numpy().astype(np.longdouble))
    digits = 24 if dtype == torch.float32 else 53  # significand bits
    ulp = np.ldexp(np.longdouble(1), np.frexp(exact)[1] - digits)
    err = np.abs(got - exact) / ulp
    assert err.max() <= 1.5, f"max error {float(err.max()):.3f} ulp"
    # the edges: exp(-0) and exp(-subnormal) are 1; arguments above 40 (and NaN) are clamped to 40
    edges = exp_neg_clamped(torch.tensor([0.0, 1e-45, 40.0, 100.0, float("inf"), float("nan")],
                                         dtype=dtype)).tolist()
    assert edges[:2] == [1.0, 1.0] and edges[2] == edges[3] == edges[4] == edges[5] > 0


def _round_to_float32(x: Fraction) -> float:
    """x rounded to the nearest float32 (ties to even), exactly: the oracle of the FMA below."""
    if x == 0:
        return 0.0
    sign, x = (-1.0 if x < 0 else 1.0), abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()  # 2^e <= x < 2^(e + 2)
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    e = max(e, -126)  # below the normal range the spacing stays 2^-149
    scaled = x / Fraction(2) ** (e - 23)  # the significand, 24 bits before the point
    m, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest > scaled.denominator or (2 * rest == scaled.denominator and m % 2 == 1):
        m += 1
    value = m * 2.0 ** (e - 23)
    return sign * (math.inf if value > float(np.finfo(np.float32).max) else value)


def test_mul_add_is_a_correctly_rounded_float32_fma(gen) -> None:
    """reference.obprox_pdca.mul_add (what the kernels' float FMAs are checked against) equals
    a * b + c computed exactly and rounded once to float32; float64 is a product then a sum."""
    from sparseopt.reference.obprox_pdca import mul_add

    n = 4000
    a = torch.randn(n, generator=gen) * torch.exp2(torch.randint(-30, 30, (n,), generator=gen).float())
    b = torch.randn(n, generator=gen)
    c = -(a * b)  # cancellation: the product's low bits decide the result
    c[n // 2:] *= 1 + 2.0 ** -20 * torch.randn(n - n // 2, generator=gen)
    c[: n // 4] = torch.randn(n // 4, generator=gen)
    # A case a plain float64 a*b+c gets wrong by rounding twice: 4097^2 = 2^24 + 2^13 + 1 sits on
    # a float32 tie, and c = 2^-40 (below float64's last bit there) puts the sum just above it;
    # then cancellations, a subnormal product, signed zeros.
    a = torch.cat([a, torch.tensor([4097.0, -4097.0, 1 + 2.0 ** -23, 3.0, 1e-30, 0.0, 1.0])])
    b = torch.cat([b, torch.tensor([4097.0, 4097.0, 1 - 2.0 ** -23, 1 / 3, 1e-20, 5.0, 2.0 ** -149])])
    c = torch.cat([c, torch.tensor([2.0 ** -40, -(2.0 ** -40), -1.0, -1.0, 0.0, -0.0, 0.0])])
    a, b, c = a.float(), b.float(), c.float()
    got = mul_add(a, b, c)
    want = [_round_to_float32(Fraction(x) * Fraction(y) + Fraction(z))
            for x, y, z in zip(a.tolist(), b.tolist(), c.tolist())]
    assert got.tolist() == want
    assert not torch.equal(got, (a.double() * b.double() + c.double()).float())  # not trivial
    a64 = a.double()
    assert torch.equal(mul_add(a64, 0.1, 0.2), a64 * 0.1 + 0.2)

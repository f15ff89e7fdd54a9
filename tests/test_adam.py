"""sparseopt.Adam/AdamW against torch.optim.Adam/AdamW, state-dict interchange, l1, AMP, compile
(docs/algorithms.md section 8)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparseopt

FLAGS = [
    dict(),
    dict(weight_decay=1e-2),
    dict(amsgrad=True),
    dict(maximize=True, weight_decay=1e-3),
    # beta1 = 0.3 amplifies the one-ulp differences of torch's vectorised sqrt past 1e-6 in 200
    # steps; 0.8 still exercises non-default betas and eps.
    dict(betas=(0.8, 0.99), eps=1e-6, amsgrad=True),
]


def make_model(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 5 * 5, 4)).to(
        dtype
    )


def backward(model, t, dtype=torch.float32):
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(8, 3, 7, 7, generator=gen, dtype=dtype)
    target = torch.randn(8, 4, generator=gen, dtype=dtype)
    (model(x) - target).square().mean().backward()


def train(model, opt, steps, start=0, dtype=torch.float32):
    for t in range(start, start + steps):
        opt.zero_grad()
        backward(model, t, dtype)
        opt.step()


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("flags", FLAGS, ids=str)
def test_matches_torch_to_fp32_rounding_over_200_steps(cls: str, flags: dict) -> None:
    ours_m, torch_m = make_model(), make_model()
    ours = getattr(sparseopt, cls)(ours_m.parameters(), lr=1e-2, **flags)
    theirs = getattr(torch.optim, cls)(torch_m.parameters(), lr=1e-2, foreach=False, **flags)
    train(ours_m, ours, 200)
    train(torch_m, theirs, 200)
    for a, b in zip(ours_m.parameters(), torch_m.parameters()):
        rel = ((a - b).abs().max() / b.abs().max()).item()
        # torch's vectorised CPU sqrt is not correctly rounded (ours is): 1-ulp differences
        # compound over 200 steps to ~1e-6, a little more or less with the thread count of the
        # model's backward (1.16e-6 with OMP_NUM_THREADS=1).
        assert rel <= 2e-6, rel
    for p, q in zip(ours_m.parameters(), torch_m.parameters()):
        assert ours.state[p]["step"].item() == theirs.state[q]["step"].item() == 200


def test_float64_matches_torch_closely() -> None:
    ours_m, torch_m = make_model(torch.float64), make_model(torch.float64)
    ours = sparseopt.Adam(ours_m.parameters(), lr=1e-2, amsgrad=True)
    theirs = torch.optim.Adam(torch_m.parameters(), lr=1e-2, amsgrad=True, foreach=False)
    train(ours_m, ours, 50, dtype=torch.float64)
    train(torch_m, theirs, 50, dtype=torch.float64)
    for a, b in zip(ours_m.parameters(), torch_m.parameters()):
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-13


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_state_dicts_interchange_with_torch(cls: str) -> None:
    """A torch state loads into sparseopt and a sparseopt state into torch; runs continue as
    if unbroken."""
    base, ref = make_model(), make_model()
    t_opt = getattr(torch.optim, cls)(base.parameters(), lr=1e-2, amsgrad=True, foreach=False)
    train(base, t_opt, 10)
    r_opt = getattr(torch.optim, cls)(ref.parameters(), lr=1e-2, amsgrad=True, foreach=False)
    train(ref, r_opt, 10)

    ours = getattr(sparseopt, cls)(base.parameters(), lr=1e-2, amsgrad=True)
    ours.load_state_dict(copy.deepcopy(t_opt.state_dict()))
    train(base, ours, 10, start=10)
    back = getattr(torch.optim, cls)(base.parameters(), lr=1e-2, amsgrad=True, foreach=False)
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    train(base, back, 10, start=20)

    train(ref, r_opt, 20, start=10)
    for a, b in zip(base.parameters(), ref.parameters()):
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-6
    assert back.state[next(base.parameters())]["step"].item() == 30


def test_native_and_reference_backends_are_bit_equal() -> None:
    runs = []
    for backend in ("native", "reference") if sparseopt.ops.extension_loaded() else ():
        m = make_model()
        train(m, sparseopt.AdamW(m.parameters(), lr=1e-2, amsgrad=True, l1=1e-3,
                                 backend=backend), 30)
        runs.append([p.detach().clone() for p in m.parameters()])
    if runs:
        for a, b in zip(*runs):
            assert torch.equal(a, b)


def test_l1_prox_gives_exact_zeros_on_weights_only() -> None:
    m = make_model()
    opt = sparseopt.Adam(m.parameters(), lr=1e-2, l1=5.0)
    train(m, opt, 30)
    assert (m[0].weight == 0).float().mean() > 0.5
    assert (m[0].bias == 0).float().mean() < 0.5  # biases are not covered by default


def test_grad_scaler_skips_inf_steps_and_unscales() -> None:
    m, twin = make_model(), make_model()
    opt = sparseopt.Adam(m.parameters(), lr=1e-2)
    ref = sparseopt.Adam(twin.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    x = torch.randn(8, 3, 7, 7)
    for scale_loss in (1.0, float("inf"), 1.0):
        opt.zero_grad()
        scaler.scale(m(x).sin().sum() * scale_loss).backward()
        scaler.step(opt)
        scaler.update()
        if scale_loss == 1.0:
            ref.zero_grad()
            twin(x).sin().sum().backward()
            ref.step()
    for a, b in zip(m.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert opt.state[m[0].weight]["step"].item() == 2  # the inf step did not count


def test_torch_compile_fullgraph_step() -> None:
    m, twin = make_model(), make_model()
    opt = sparseopt.Adam(m.parameters(), lr=1e-2)
    ref = sparseopt.Adam(twin.parameters(), lr=1e-2)
    train(m, opt, 1)
    train(twin, ref, 1)
    compiled = torch.compile(opt.step, fullgraph=True, backend="aot_eager")
    for t in range(1, 4):
        opt.zero_grad()
        backward(m, t)
        compiled()
        train(twin, ref, 1, start=t)
    for a, b in zip(m.parameters(), twin.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-1e-3), "lr"),
        (dict(betas=(1.0, 0.999)), r"betas\[0\]"),
        (dict(betas=(0.9, -0.1)), r"betas\[1\]"),
        (dict(betas=(0.9,)), "pair"),
        (dict(eps=0.0), "eps > 0"),
        (dict(weight_decay=float("nan")), "weight_decay"),
        (dict(l1=-1.0), "l1"),
        (dict(differentiable=True), "differentiable"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sparseopt.Adam(make_model().parameters(), **kwargs)


def test_sparse_gradient_is_rejected_before_any_change() -> None:
    emb = nn.Embedding(10, 3, sparse=True)
    opt = sparseopt.Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse gradient"):
        opt.step()
    assert torch.equal(emb.weight, before) and not opt.state


@pytest.mark.skipif(not sparseopt.ops.extension_loaded(), reason="native extension not built")
@pytest.mark.parametrize("beta1", [0.9, 0.3, 0.5])  # both forms of torch's lerp, and the switch
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_special_values_match_the_reference(beta1: float, dtype: torch.dtype) -> None:
    """NaN, inf and signed zeros in the gradient and the moments flow through the branch-free
    native formula (amsgrad's NaN-propagating maximum, maximize, l1 off/on) exactly as through
    the reference's torch ops."""
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, -2.5,
                            3.0, 1e30, -1e-8, 0.25, 7.0], dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    perm = [torch.randperm(special.numel(), generator=gen) for _ in range(4)]
    for maximize in (False, True):
        for l1 in (0.0, 0.1):
            runs = []
            for fn in (torch.ops.sparseopt.adam_step_, sparseopt.reference.adam_step_):
                w = [special[perm[0]].clone()]
                g = [special[perm[1]].clone()]
                m = [special[perm[2]].clone()]
                v = [special[perm[3]].abs()]
                vmax = [special.flip(0).abs()]
                steps = [torch.zeros((), dtype=torch.float32)]
                for _ in range(2):
                    fn(w, g, m, v, vmax, steps, 1e-2, beta1, 0.999, 1e-8, 0.0, True, maximize,
                       False, l1, None, None)
                runs.append([w[0], m[0], v[0], vmax[0]])
            for a, b in zip(*runs):
                assert torch.equal(a.isnan(), b.isnan())
                keep = ~a.isnan()
                assert torch.equal(a[keep], b[keep]) and torch.equal(a[keep].signbit(),
                                                                     b[keep].signbit())

"""AdaHessian: the Hutchinson diagonal, the update against a straightforward implementation,
update_each, memory, checkpoints and errors (docs/algorithms.md section 9)."""

from __future__ import annotations

import gc

import pytest
import torch
from conftest import DEVICES
from torch import nn

import sparseopt
from sparseopt import reference

NATIVE = sparseopt.ops.extension_loaded()
HUTCH = [reference.hutchinson_diag_] + ([torch.ops.sparseopt.hutchinson_diag_] if NATIVE else [])


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def batch(t: int):
    gen = torch.Generator().manual_seed(t)
    return torch.randn(6, 2, 7, 7, generator=gen), torch.randint(0, 3, (6,), generator=gen)


def closure_for(model, opt, t):
    def closure():
        opt.zero_grad()
        x, y = batch(t)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward(create_graph=True)
        return loss

    return closure


@pytest.mark.parametrize("fn", HUTCH, ids=["reference", "native"][: len(HUTCH)])
def test_hutchinson_is_exact_on_a_separable_quadratic(fn) -> None:
    """f(w) = sum a w^2 / 2 has H = diag(a): |z * Hz| = |a| for every Rademacher z."""
    a_lin = torch.rand(7, 5) + 0.1
    a_conv = (torch.rand(4, 3, 1, 1) + 0.1).expand(4, 3, 3, 3).contiguous()  # constant over taps
    ws = [torch.randn(7, 5, requires_grad=True), torch.randn(4, 3, 3, 3, requires_grad=True)]
    loss = 0.5 * ((a_lin * ws[0] ** 2).sum() + (a_conv * ws[1] ** 2).sum())
    grads = torch.autograd.grad(loss, ws, create_graph=True)
    zs = [torch.randint(0, 2, w.shape).float() * 2 - 1 for w in ws]
    hzs = torch.autograd.grad(grads, ws, grad_outputs=zs)
    diags = [torch.zeros_like(w) for w in ws]
    fn(diags, zs, list(hzs), 1.0, False)
    torch.testing.assert_close(diags[0], a_lin, rtol=1e-6, atol=0)
    torch.testing.assert_close(diags[1], a_conv, rtol=1e-6, atol=0)


@pytest.mark.parametrize("fn", HUTCH, ids=["reference", "native"][: len(HUTCH)])
def test_hutchinson_mean_over_2000_draws_approaches_the_dense_diagonal(fn) -> None:
    torch.manual_seed(0)
    n = 40
    b = torch.randn(n, n) * 0.1
    a = b @ b.T + torch.diag(torch.rand(n) + 1.0)  # dense, diagonally dominant
    w = torch.randn(n, requires_grad=True)
    (g,) = torch.autograd.grad(0.5 * w @ a @ w, [w], create_graph=True)
    diag = torch.zeros(n)
    for k in range(2000):
        z = torch.randint(0, 2, (n,)).float() * 2 - 1
        (hz,) = torch.autograd.grad(g, [w], grad_outputs=z, retain_graph=True)
        fn([diag], [z], [hz], 1.0 / 2000, k > 0)
    rel = ((diag - torch.diagonal(a)).abs() / torch.diagonal(a)).max().item()
    assert rel < 0.03, rel


def test_hutchinson_spatial_mean_of_conv_weights() -> None:
    z = torch.tensor([1.0, -1, 1, -1]).reshape(1, 1, 2, 2)
    hz = torch.tensor([1.0, 2, -3, 6]).reshape(1, 1, 2, 2)
    for fn in HUTCH:
        d = torch.zeros(1, 1, 2, 2)
        fn([d], [z], [hz], 1.0, False)
        assert torch.equal(d, torch.full((1, 1, 2, 2), 3.0))  # mean(1, 2, 3, 6)


@pytest.mark.skipif(not NATIVE, reason="the native extension is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_native_hutchinson_equals_the_reference_bit_for_bit(dtype: torch.dtype) -> None:
    """Element-wise tensors and conv weights (rows of 9 and 25 taps: whole blocks of 16 rows and
    a partial last block on the vector path; 81 taps: longer than the vector path takes), fresh
    and accumulating, contiguous or not, special values included."""
    shapes = [(70_000,), (33, 17), (5, 3, 3, 3), (37, 5, 3, 3), (6, 4, 5, 5), (2, 3, 9, 9),
              (4, 2, 1, 1), (0,), ()]
    runs = []
    for fn in (torch.ops.sparseopt.hutchinson_diag_, reference.hutchinson_diag_):
        g = torch.Generator().manual_seed(11)
        diags, zs, hzs = [], [], []
        for shape in shapes:
            z = (torch.randint(0, 2, shape, generator=g) * 2 - 1).to(dtype)
            hz = torch.randn(shape, generator=g).to(dtype) * 3
            if hz.numel() > 4:
                hz.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -0.0], dtype=dtype)
            zs.append(z)
            hzs.append(hz)
            diags.append(torch.rand(shape, generator=g).to(dtype))
        diags[1] = diags[1].t().contiguous().t()  # a non-contiguous diag
        fn(diags, zs, hzs, 0.5, False)
        fn(diags, zs, [h.flip(0) if h.dim() else h for h in hzs], 0.5, True)
        runs.append(diags)
    for a, b in zip(*runs):
        assert torch.equal(a.isnan(), b.isnan())
        keep = ~a.isnan()
        assert torch.equal(a[keep], b[keep])


def straightforward_adahessian(model, steps, lr=0.15, betas=(0.9, 0.999), eps=1e-4, seed=0):
    """An independent per-parameter implementation (Yao et al.'s reference, formula sheet)."""
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        x, y = batch(t - 1)
        loss = nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        zs = [torch.randint(0, 2, p.shape, generator=gen, dtype=p.dtype) * 2 - 1 for p in params]
        hzs = torch.autograd.grad(grads, params, grad_outputs=zs)
        with torch.no_grad():
            for i, p in enumerate(params):
                d = (zs[i] * hzs[i]).abs()
                if p.dim() == 4:
                    d = d.mean(dim=(2, 3), keepdim=True).expand_as(p)
                m[i] = betas[0] * m[i] + (1 - betas[0]) * grads[i]
                v[i] = betas[1] * v[i] + (1 - betas[1]) * d * d
                denom = v[i].sqrt() / (1 - betas[1] ** t) ** 0.5 + eps
                p -= lr * (m[i] / (1 - betas[0] ** t)) / denom
    return [p.detach() for p in params]


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_agrees_with_a_straightforward_implementation_over_50_steps(backend: str) -> None:
    model = make_model()
    opt = sparseopt.AdaHessian(model.parameters(), seed=0, backend=backend)
    for t in range(50):
        opt.step(closure_for(model, opt, t))
    expected = straightforward_adahessian(make_model(), 50)
    for a, b in zip(model.parameters(), expected):
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not NATIVE, reason="the native extension is not built")
def test_native_equals_reference_bit_for_bit() -> None:
    runs = []
    for backend in ("native", "reference"):
        model = make_model()
        opt = sparseopt.AdaHessian(model.parameters(), lr=0.05, weight_decay=1e-3, n_samples=2,
                                   seed=3, backend=backend)
        for t in range(10):
            opt.step(closure_for(model, opt, t))
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_update_each_reuses_the_last_diagonal() -> None:
    model = make_model()
    opt = sparseopt.AdaHessian(model.parameters(), update_each=3, seed=0)
    w = model[0].weight
    diags = []
    for t in range(6):
        opt.zero_grad()
        x, y = batch(t)
        # only the steps that refresh D need the graph
        nn.functional.cross_entropy(model(x), y).backward(create_graph=t % 3 == 0)
        opt.step()
        diags.append(opt.state[w]["hessian_diag"].clone())
    assert torch.equal(diags[0], diags[1]) and torch.equal(diags[1], diags[2])
    assert not torch.equal(diags[2], diags[3])


def test_graph_is_freed_and_memory_stays_flat() -> None:
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))
    opt = sparseopt.AdaHessian(model.parameters(), lr=0.01, seed=0)
    x, y = torch.randn(16, 6), torch.randn(16, 2)

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    counts = []
    for t in range(1000):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward(create_graph=True)
        opt.step()
        if t in (50, 999):
            counts.append(live_tensors())
    assert all(p.grad.grad_fn is None for p in model.parameters())
    assert counts[1] <= counts[0], counts


def test_state_dict_resume_is_bit_exact_including_the_probes() -> None:
    model = make_model()
    opt = sparseopt.AdaHessian(model.parameters(), seed=5)
    for t in range(8):
        opt.step(closure_for(model, opt, t))
    unbroken = [p.detach().clone() for p in model.parameters()]

    model = make_model()
    opt = sparseopt.AdaHessian(model.parameters(), seed=5)
    for t in range(4):
        opt.step(closure_for(model, opt, t))
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    resumed = make_model()
    resumed.load_state_dict(saved_model)
    opt2 = sparseopt.AdaHessian(resumed.parameters(), seed=123)  # the seed comes from the state
    opt2.load_state_dict(saved_opt)
    for t in range(4, 8):
        opt2.step(closure_for(resumed, opt2, t))
    for a, b in zip(resumed.parameters(), unbroken):
        assert torch.equal(a, b)


def test_parameter_whose_gradient_has_no_graph_gets_a_zero_diagonal() -> None:
    # b enters the loss linearly, so b.grad is a constant without a graph even after
    # backward(create_graph=True): its Hessian row is zero, which is no reason to refuse the step.
    a = torch.tensor([1.0, 2.0, 4.0])
    c = torch.tensor([0.5, -1.0])
    w = nn.Parameter(torch.tensor([1.0, -1.0, 0.5]))
    b = nn.Parameter(torch.zeros(2))
    opt = sparseopt.AdaHessian([w, b], lr=0.1, seed=0)
    (0.5 * (a * w * w).sum() + (c * b).sum()).backward(create_graph=True)
    assert b.grad.grad_fn is None and w.grad.grad_fn is not None
    opt.step()
    assert torch.equal(opt.state[w]["hessian_diag"], a)
    assert torch.equal(opt.state[b]["hessian_diag"], torch.zeros(2))
    assert not torch.equal(b.detach(), torch.zeros(2))  # the first moment still moves b


def test_step_without_a_graph_says_how_to_call_it() -> None:
    model = make_model()
    opt = sparseopt.AdaHessian(model.parameters())
    x, y = batch(0)
    nn.functional.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"loss.backward\(create_graph=True\)"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))
    assert not opt.state


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-0.1), "lr"),
        (dict(betas=(1.0, 0.9)), r"betas\[0\]"),
        (dict(eps=0.0), "eps"),
        (dict(hessian_power=0.0), "hessian_power"),
        (dict(hessian_power=1.5), "hessian_power"),
        (dict(update_each=0), "update_each"),
        (dict(n_samples=0), "n_samples"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_bad_hyperparameters(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        sparseopt.AdaHessian(make_model().parameters(), **kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_hessian_power_below_one(device: str) -> None:
    model = make_model().to(device)
    opt = sparseopt.AdaHessian(model.parameters(), hessian_power=0.5, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure_for(model, opt, 0))
    assert all(torch.isfinite(p).all() and not torch.equal(p, b)
               for p, b in zip(model.parameters(), before))

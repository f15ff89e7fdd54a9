"""The rules against the formula sheet (docs/algorithms.md), computed independently in numpy
float64 straight from the written formulas; and the iRDA initialisation and sparsity measure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sparseopt
from sparseopt import reference

BACKENDS = ["reference"] + (["native"] if sparseopt.ops.extension_loaded() else [])


def soft(u: np.ndarray, a: float) -> np.ndarray:
    return np.sign(u) * np.maximum(np.abs(u) - a, 0.0)


def _fn(name: str, backend: str):
    return getattr(reference, name) if backend == "reference" else getattr(torch.ops.sparseopt, name)


def _data(rng: np.random.Generator, n: int = 2001, steps: int = 30):
    w = rng.standard_normal(n)
    w[::5] = 0.0
    grads = [rng.standard_normal(n) * 0.3 + 0.2 * np.sign(w) for _ in range(steps)]
    return w, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.01)])
def test_prox_sgd_formula(backend: str, momentum: float, wd: float) -> None:
    lr, lam = 0.1, 0.3
    w, grads = _data(np.random.default_rng(0))
    m = np.zeros_like(w)
    p = torch.tensor(w)
    buf = [torch.zeros_like(p)] if momentum else []
    for g in grads:
        gg = g + wd * w
        if momentum:
            m = momentum * m + gg
            gg = m
        w = soft(w - lr * gg, lr * lam)
        _fn("prox_sgd_step_", backend)([p], [torch.tensor(g)], buf, lr, lam, momentum, wd)
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-12, atol=1e-14)
    assert np.array_equal(p.numpy() == 0, w == 0)  # exact zeros exactly where |u| <= lr*lambda
    assert 0 < (w == 0).mean() < 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_sqrt_t_prox_sgd_formula(backend: str) -> None:
    lr, lam, gamma = 0.1, 0.02, 2.0
    w, grads = _data(np.random.default_rng(1))
    p, step = torch.tensor(w), torch.zeros((), dtype=torch.float32)
    for t, g in enumerate(grads, start=1):
        w = soft(w - lr * g, lam * math.sqrt(t) / gamma)
        _fn("sqrt_t_prox_sgd_step_", backend)(
            [p], [torch.tensor(g)], [], [step], lr, lam, gamma, 0.0, 0.0
        )
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-12, atol=1e-14)
    assert step.item() == len(grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("retrain_after", [-1, 10])
def test_rda_irda_formula(backend: str, center: bool, retrain_after: int) -> None:
    lam, gamma = 0.15, 4.0
    rng = np.random.default_rng(2)
    w, grads = _data(rng)
    w0 = rng.standard_normal(w.shape) if center else np.zeros_like(w)
    gbar = np.zeros_like(w)
    p, gb, step = torch.tensor(w), torch.zeros(w.shape, dtype=torch.float64), torch.zeros(())
    centers = [torch.tensor(w0)] if center else []
    for t, g in enumerate(grads, start=1):
        if retrain_after >= 0 and t > retrain_after:
            g = np.where(w == 0, 0.0, g)  # eq. 29-31: mask from the current w
            frozen = w == 0
        else:
            frozen = np.zeros(w.shape, bool)
        gbar = gbar + (g - gbar) / t
        s = math.sqrt(t) / gamma
        w = np.where(frozen, 0.0, soft(w0 - s * gbar, s * lam))
        _fn("rda_step_", backend)(
            [p], [torch.tensor(g)], [gb], centers, [step], 1.0, lam, gamma, False, retrain_after
        )
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gb.numpy(), gbar, rtol=1e-12, atol=1e-15)
    if not center:  # with w0 = 0: w == 0 iff |gbar| <= lambda (outside retraining)
        if retrain_after < 0:
            assert np.array_equal(p.numpy() == 0, np.abs(gbar) <= lam)


def test_irda_init_statistics() -> None:
    w = torch.empty(256, 64, 3, 3)
    gen = torch.Generator().manual_seed(0)
    sparseopt.init.irda_(w, s=5.0, generator=gen)
    sigma = 5.0 / math.sqrt(64 * 9)
    assert w.abs().max() <= math.sqrt(3) * sigma
    assert abs(w.std().item() - sigma) < 0.01 * sigma
    assert abs(w.mean().item()) < 0.01 * sigma
    lin = torch.nn.Linear(100, 10)
    bias = lin.bias.detach().clone()
    sparseopt.init.irda_model_(lin, s=2.0)
    assert lin.weight.abs().max() <= math.sqrt(3) * 2.0 / 10.0
    assert torch.equal(lin.bias, bias)  # biases are not iRDA-initialised


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "3"])
def test_irda_init_rejects_bad_s(bad) -> None:
    with pytest.raises(ValueError, match="s"):
        sparseopt.init.irda_(torch.empty(3, 3), bad)
    with pytest.raises(ValueError, match="at least 2 dims"):
        sparseopt.init.irda_(torch.empty(3), 1.0)


def test_sparsity_and_report() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight.zero_()  # 72 of 72 zeros
        model[2].weight.fill_(1.0)  # 0 of 12
        model[2].weight[0, :2] = 0  # 2 of 12
        model[0].bias.zero_()  # not covered by default
    assert sparseopt.sparsity(model) == pytest.approx(74 / 84)
    assert sparseopt.sparsity(model, l1_on="all") == pytest.approx(78 / 91)
    assert sparseopt.sparsity(model.parameters()) == pytest.approx(74 / 84)
    report = sparseopt.sparsity_report(model)
    assert report.total == pytest.approx(74 / 84)
    text = str(report)
    assert "0.weight" in text and "2.weight" in text
    assert "| 0.weight |" in report.to_markdown()
    with pytest.raises(ValueError, match="l1_on"):
        sparseopt.sparsity(model, l1_on="biases")

"""Convergence of OBProx-SG / OBProx-SG+ and pDCA_e: an l1 (resp. exponential-l0) regularised
least-squares problem with a known sparse truth, against long-run numpy solutions; and the digits
convnet end to end (OBProx-SG prunes more than Prox-SGD at the same l1, same accuracy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseopt

# -- 500 x 200 least squares with a 12-sparse truth ----------------------------------------------

N, D, K = 500, 200, 12
LAM_L1 = 0.05  # l1 weight of the lasso
LAM_EXP, THETA = 0.02, 5.0  # pDCA_e: lambda * sum(1 - exp(-theta |x|)); lambda*theta = 0.1


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((N, D))
    x_true = np.zeros(D)
    support = np.sort(rng.choice(D, K, replace=False))
    x_true[support] = rng.choice([-1.0, 1.0], K) * rng.uniform(1.0, 2.0, K)
    b = A @ x_true + 0.1 * rng.standard_normal(N)
    H, Atb = A.T @ A / N, A.T @ b / N
    L = float(np.linalg.eigvalsh(H).max())
    return A, b, H, Atb, L, support


def _f(A, b, x) -> float:
    r = A @ x - b
    return 0.5 * float(r @ r) / N


def _soft(u, a):
    return np.sign(u) * np.maximum(np.abs(u) - a, 0.0)


def _lasso_objective(A, b, x) -> float:
    return _f(A, b, x) + LAM_L1 * float(np.abs(x).sum())


def _exp_objective(A, b, x) -> float:
    return _f(A, b, x) + LAM_EXP * float((1.0 - np.exp(-THETA * np.abs(x))).sum())


@pytest.fixture(scope="module")
def lasso_solution(problem):
    """FISTA (Beck & Teboulle) in numpy float64, 5000 iterations: the long-run reference."""
    A, b, H, Atb, L, _ = problem
    x = np.zeros(D)
    y, tk = x.copy(), 1.0
    for _ in range(5000):
        x_new = _soft(y - (H @ y - Atb) / L, LAM_L1 / L)
        t_new = (1 + math.sqrt(1 + 4 * tk * tk)) / 2
        y = x_new + (tk - 1) / t_new * (x_new - x)
        x, tk = x_new, t_new
    return x


@pytest.fixture(scope="module")
def exp_solution(problem):
    """Proximal DCA without extrapolation in numpy float64, 5000 iterations (the long-run
    reference for the nonconvex exponential surrogate, from the same start x = 0)."""
    A, b, H, Atb, L, _ = problem
    x = np.zeros(D)
    for _ in range(5000):
        xi = THETA * np.sign(x) * (1 - np.exp(-THETA * np.abs(x)))
        x = _soft(x - (H @ x - Atb - LAM_EXP * xi) / L, LAM_EXP * THETA / L)
    return x


def _fit(problem, make_opt, steps: int):
    """Full-batch training of x (a float64 parameter, starting at 0) on f(x) = ||Ax - b||^2/2N."""
    A, b, *_ = problem
    At, bt = torch.tensor(A), torch.tensor(b)
    p = nn.Parameter(torch.zeros(D, dtype=torch.float64))
    opt = make_opt([p])
    for _ in range(steps):
        opt.zero_grad()
        r = At @ p - bt
        (0.5 * (r @ r) / N).backward()
        opt.step()
    return opt, p


OBPROX = {
    "OBProxSG": lambda ps, lr: sparseopt.OBProxSG(ps, lr=lr, l1=LAM_L1, n_p=5, n_o=5,
                                                  steps_per_epoch=10, l1_on="all"),
    "OBProxSGPlus": lambda ps, lr: sparseopt.OBProxSGPlus(ps, lr=lr, l1=LAM_L1, n_p=3,
                                                          steps_per_epoch=10, l1_on="all"),
}


@pytest.mark.parametrize("name", list(OBPROX))
def test_obproxsg_solves_the_lasso_and_recovers_the_support(problem, lasso_solution, name):
    A, b, *_, L, support = problem
    f_star = _lasso_objective(A, b, lasso_solution)
    assert np.array_equal(np.flatnonzero(lasso_solution), support)  # the problem is well posed
    opt, p = _fit(problem, lambda ps: OBPROX[name](ps, 1.0 / L), steps=300)
    x = p.detach().numpy()
    assert opt.phase(step=300) == "orthant"  # it finished in the orthant phase
    rel = (_lasso_objective(A, b, x) - f_star) / f_star
    assert rel < 1e-4, rel
    assert np.array_equal(np.flatnonzero(x), support)
    # the sign pattern is the truth's too
    assert np.array_equal(np.sign(x[support]), np.sign(lasso_solution[support]))


def test_pdca_solves_the_exp_penalised_problem_and_recovers_the_support(problem, exp_solution):
    A, b, *_, L, support = problem
    f_star = _exp_objective(A, b, exp_solution)
    assert np.array_equal(np.flatnonzero(exp_solution), support)
    opt, p = _fit(
        problem, lambda ps: sparseopt.PDCA(ps, lr=1.0 / L, l1=LAM_EXP, theta=THETA, l1_on="all"),
        steps=300,
    )
    x = opt.sparse_params()[0].numpy()
    rel = (_exp_objective(A, b, x) - f_star) / f_star
    assert rel < 1e-4, rel
    assert np.array_equal(np.flatnonzero(x), support)
    # the l0-like surrogate is less biased than the lasso on the large true coefficients
    A_s = A[:, support]
    ols = np.linalg.lstsq(A_s, b, rcond=None)[0]
    assert np.abs(x[support] - ols).max() < 0.02


# -- digits convnet end to end ------------------------------------------------------------------

EPOCHS, BATCH = 20, 32


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1347], y[:1347], x[1347:], y[1347:]


def _convnet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 10),
    )  # fmt: skip


def _train(model: nn.Module, opt: torch.optim.Optimizer, digits) -> None:
    x_train, y_train, _, _ = digits
    gen = torch.Generator().manual_seed(0)
    n = len(y_train)
    for _ in range(EPOCHS):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - BATCH + 1, BATCH):  # full batches: 42 steps per epoch
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()


@torch.no_grad()
def _accuracy(model: nn.Module, digits) -> float:
    _, _, x_test, y_test = digits
    return (model(x_test).argmax(1) == y_test).float().mean().item()


STEPS_PER_EPOCH = 1347 // BATCH


@pytest.mark.slow
def test_digits_obproxsg_prunes_more_than_prox_sgd_at_the_same_l1(digits) -> None:
    lr, l1 = 0.1, 1e-3
    prox_model = _convnet()
    _train(prox_model, sparseopt.ProxSGD(prox_model.parameters(), lr=lr, l1=l1), digits)
    ob_model = _convnet()
    ob = sparseopt.OBProxSG(ob_model.parameters(), lr=lr, l1=l1, steps_per_epoch=STEPS_PER_EPOCH)
    _train(ob_model, ob, digits)
    assert ob.phase(step=EPOCHS * STEPS_PER_EPOCH) == "orthant"  # epochs 15-19 are orthant
    prox_acc, ob_acc = _accuracy(prox_model, digits), _accuracy(ob_model, digits)
    prox_sp, ob_sp = sparseopt.sparsity(prox_model), sparseopt.sparsity(ob_model)
    assert prox_acc >= 0.9, prox_acc
    assert ob_acc >= prox_acc - 0.02, (ob_acc, prox_acc)
    assert ob_sp >= prox_sp + 0.05, (ob_sp, prox_sp)


@pytest.mark.slow
def test_digits_pdca_evaluates_the_sparse_iterate(digits) -> None:
    model = _convnet()
    opt = sparseopt.PDCA(model.parameters(), lr=0.05, l1=1e-3, theta=10.0)
    _train(model, opt, digits)
    with opt.eval_params():
        acc, sp = _accuracy(model, digits), sparseopt.sparsity(model)
    assert acc >= 0.88, acc
    assert sp >= 0.9, sp
    assert sp == sparseopt.sparsity(opt.sparse_params()[0::2])  # the weights (dim > 1)

"""Benchmark rows of OBProx-SG (each phase) and pDCA_e (see bench_optim.py for the contract).

Bytes per fp32 element per step: OBProx-SG reads w and g and writes w (12); pDCA_e reads
p (= y), g and x and writes p and x (20; 10 in bfloat16, 40 in float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

import sparseopt
from bench_optim import in_dtype

LR, L1, THETA, RESTART = 0.01, 1e-4, 5.0, 200
PROX_FOREVER = 10**12  # steps_per_epoch so large that every benchmarked step is Prox-SG


def _step(opt: torch.optim.Optimizer) -> Callable[[], None]:
    return lambda: opt.step()


def _orthant(opt: sparseopt.OBProxSG) -> Callable[[], None]:
    """OBProx-SG+ with one Prox-SG step of one epoch: take that step here, so every timed step
    is an orthant step."""
    opt.step()
    assert opt.phase() == "orthant"
    return _step(opt)


def _obprox(ps: list[Tensor], backend: str, orthant: bool) -> Callable[[], None]:
    if orthant:
        return _orthant(sparseopt.OBProxSGPlus(ps, lr=LR, l1=L1, n_p=1, steps_per_epoch=1,
                                               l1_on="all", backend=backend))
    return _step(sparseopt.OBProxSG(ps, lr=LR, l1=L1, steps_per_epoch=PROX_FOREVER,
                                    l1_on="all", backend=backend))


# -- naive per-parameter loops, written the way the published reference code does it ----------
# (tianyic/obproxsg, optimizer/obproxsg.py: masks and index assignment per tensor)


def naive_obprox_prox(params: list[Tensor]) -> Callable[[], None]:
    @torch.no_grad()
    def step() -> None:
        for p in params:
            trial = torch.zeros_like(p)
            pos = p - LR * p.grad - LR * L1
            neg = p - LR * p.grad + LR * L1
            pos_idx, neg_idx = pos > 0, neg < 0
            trial[pos_idx] = pos[pos_idx]
            trial[neg_idx] = neg[neg_idx]
            p.add_(trial - p)

    return step


def naive_obprox_orthant(params: list[Tensor]) -> Callable[[], None]:
    zetas = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step() -> None:
        for p, zeta in zip(params, zetas):
            g = p.grad
            zeta.zero_()
            zeta[p > 0] = 1
            zeta[p < 0] = -1
            grad = torch.zeros_like(g)
            grad[zeta > 0] = g[zeta > 0] + L1
            grad[zeta < 0] = g[zeta < 0] - L1
            hat_x = p - LR * grad
            proj = torch.zeros_like(hat_x)
            keep = hat_x * zeta > 0.0
            proj[keep] = hat_x[keep]
            p.copy_(proj)

    return step


def naive_pdca(params: list[Tensor]) -> Callable[[], None]:
    xs = [p.detach().clone() for p in params]
    k = [1.0, 1.0]  # (k_{t-1}, k_t), from k_{-1} = k_0 = 1
    t = [0]

    @torch.no_grad()
    def step() -> None:  # step t extrapolates with beta_t (docs/algorithms.md section 7)
        t[0] += 1
        k[0], k[1] = k[1], (1 + math.sqrt(1 + 4 * k[1] ** 2)) / 2
        if t[0] % RESTART == 0:
            k[0] = k[1] = 1.0
        beta = (k[0] - 1) / k[1]
        for p, x in zip(params, xs):
            xi = THETA * torch.sign(x) * (1 - torch.exp(-THETA * torch.abs(x)))
            u = p - LR * (p.grad - L1 * xi)
            x_new = torch.sign(u) * torch.clamp(torch.abs(u) - LR * L1 * THETA, min=0)
            p.copy_(x_new + beta * (x_new - x))
            x.copy_(x_new)

    return step


def _pdca(ps: list[Tensor], backend: str) -> Callable[[], None]:
    return _step(sparseopt.PDCA(ps, lr=LR, l1=L1, theta=THETA, restart=RESTART, l1_on="all",
                                backend=backend))


ROWS: list[tuple[str, Callable[[list[Tensor]], Callable[[], None]], int]] = [
    ("OBProx-SG Prox-SG phase: sparseopt native", lambda ps: _obprox(ps, "native", False), 12),
    ("OBProx-SG Prox-SG phase: sparseopt reference",
     lambda ps: _obprox(ps, "reference", False), 12),
    ("OBProx-SG Prox-SG phase: naive loop", naive_obprox_prox, 12),
    ("OBProx-SG orthant phase: sparseopt native", lambda ps: _obprox(ps, "native", True), 12),
    ("OBProx-SG orthant phase: sparseopt reference",
     lambda ps: _obprox(ps, "reference", True), 12),
    ("OBProx-SG orthant phase: naive loop", naive_obprox_orthant, 12),
    ("pDCA_e: sparseopt native", lambda ps: _pdca(ps, "native"), 20),
    ("pDCA_e: sparseopt reference", lambda ps: _pdca(ps, "reference"), 20),
    ("pDCA_e: naive loop", naive_pdca, 20),
    ("pDCA_e (bf16): sparseopt native", in_dtype(torch.bfloat16, lambda ps: _pdca(ps, "native")),
     10),
    ("pDCA_e (fp64): sparseopt native", in_dtype(torch.float64, lambda ps: _pdca(ps, "native")),
     40),
]

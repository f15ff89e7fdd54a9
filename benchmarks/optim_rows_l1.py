"""Benchmark rows of the l1 family (see bench_optim.py for the contract)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

import sparseopt

LR, L1, MOM, GAMMA = 0.01, 1e-4, 0.9, 1.0


def _step(opt: torch.optim.Optimizer) -> Callable[[], None]:
    return lambda: opt.step()


# -- naive per-parameter loops, written the way the published reference code does it ----------


def naive_prox_sgd(params: list[torch.Tensor]) -> Callable[[], None]:
    @torch.no_grad()
    def step() -> None:
        for p in params:
            p.add_(p.grad, alpha=-LR)
            p.copy_(torch.sign(p) * torch.clamp(torch.abs(p) - LR * L1, min=0))

    return step


def naive_prox_sgd_momentum(params: list[torch.Tensor]) -> Callable[[], None]:
    bufs = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step() -> None:
        for p, b in zip(params, bufs):
            b.mul_(MOM).add_(p.grad)
            p.add_(b, alpha=-LR)
            p.copy_(torch.sign(p) * torch.clamp(torch.abs(p) - LR * L1, min=0))

    return step


def naive_irda(params: list[torch.Tensor]) -> Callable[[], None]:
    gbars = [torch.zeros_like(p) for p in params]
    t = [0]

    @torch.no_grad()
    def step() -> None:
        t[0] += 1
        k = t[0]
        for p, gbar in zip(params, gbars):
            gbar.mul_((k - 1) / k).add_(p.grad / k)
            scale = math.sqrt(k) / GAMMA
            p.copy_(-scale * torch.sign(gbar) * torch.clamp(torch.abs(gbar) - L1, min=0))

    return step


ROWS = [
    ("Prox-SGD: sparseopt native",
     lambda ps: _step(sparseopt.ProxSGD(ps, lr=LR, l1=L1, backend="native")), 12),
    ("Prox-SGD: sparseopt reference",
     lambda ps: _step(sparseopt.ProxSGD(ps, lr=LR, l1=L1, backend="reference")), 12),
    ("Prox-SGD: naive loop", naive_prox_sgd, 12),
    ("Prox-SGD: torch SGD fused (no prox)",
     lambda ps: _step(torch.optim.SGD(ps, lr=LR, fused=True)), 12),
    ("Prox-SGD: torch SGD foreach (no prox)",
     lambda ps: _step(torch.optim.SGD(ps, lr=LR, foreach=True)), 12),
    ("Prox-SGD+momentum: sparseopt native",
     lambda ps: _step(sparseopt.ProxSGD(ps, lr=LR, l1=L1, momentum=MOM, backend="native")), 20),
    ("Prox-SGD+momentum: naive loop", naive_prox_sgd_momentum, 20),
    ("Prox-SGD+momentum: torch SGD fused (no prox)",
     lambda ps: _step(torch.optim.SGD(ps, lr=LR, momentum=MOM, fused=True)), 20),
    ("sqrt(t)-Prox-SGD: sparseopt native",
     lambda ps: _step(sparseopt.SqrtTProxSGD(ps, lr=LR, l1=L1, backend="native")), 12),
    ("iRDA: sparseopt native",
     lambda ps: _step(sparseopt.IRDA(ps, l1=L1, gamma=GAMMA, backend="native")), 20),
    ("iRDA: sparseopt reference",
     lambda ps: _step(sparseopt.IRDA(ps, l1=L1, gamma=GAMMA, backend="reference")), 20),
    ("iRDA: naive loop", naive_irda, 20),
    ("iRDA retraining: sparseopt native",
     lambda ps: _retraining(sparseopt.IRDA(ps, l1=L1, gamma=GAMMA, backend="native")), 20),
    ("RDA (w0 = init): sparseopt native",
     lambda ps: _step(sparseopt.RDA(ps, l1=L1, gamma=GAMMA, backend="native")), 24),
]


def _retraining(opt: sparseopt.IRDA) -> Callable[[], None]:
    opt.start_retraining()
    return _step(opt)

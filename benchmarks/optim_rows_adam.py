"""Benchmark rows of Adam and AdaHessian (see bench_optim.py for the contract)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

import sparseopt
from bench_optim import in_dtype
from sparseopt.optim import SparseOptimizer

LR = 1e-3


def _step(opt: torch.optim.Optimizer) -> Callable[[], None]:
    return lambda: opt.step()


def naive_adam(params: list[torch.Tensor]) -> Callable[[], None]:
    """Adam as a per-parameter loop of plain tensor ops (the seed paper's skeleton)."""
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    t = [0]

    @torch.no_grad()
    def step() -> None:
        t[0] += 1
        for p, mi, vi in zip(params, m, v):
            g = p.grad
            mi.mul_(0.9).add_(g, alpha=0.1)
            vi.mul_(0.999).addcmul_(g, g, value=0.001)
            mhat = mi / (1 - 0.9 ** t[0])
            vhat = vi / (1 - 0.999 ** t[0])
            p.sub_(LR * mhat / (vhat.sqrt() + 1e-8))

    return step


def _hessian_inputs(params: list[torch.Tensor]):
    gen = torch.Generator().manual_seed(0)
    zs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params]
    hzs = [torch.randn(p.shape, generator=gen).to(p) for p in params]
    return zs, hzs


def fused_adahessian(params: list[torch.Tensor], backend: str = "native") -> Callable[[], None]:
    """The two fused ops of an AdaHessian step (Hutchinson diagonal + update), excluding the
    backward and the Hessian-vector product, on precomputed z and Hz."""
    opt = sparseopt.AdaHessian(params, backend=backend)
    for group in opt.param_groups:
        for p in group["params"]:
            opt._init_state(p, opt.state[p], group)
    zs, hzs = _hessian_inputs(params)
    diags = [opt.state[p]["hessian_diag"] for p in params]
    hutch = sparseopt.ops.resolve("hutchinson_diag_", params[0].device, backend)

    @torch.no_grad()
    def step() -> None:
        hutch(diags, zs, hzs, 1.0, False)
        buckets = opt._buckets()
        SparseOptimizer._preflight(opt, buckets)  # the checks of every step (no Hessian pass)
        opt._run_ops(buckets, None)

    return step


def adahessian_reusing_d(params: list[torch.Tensor]) -> Callable[[], None]:
    """``AdaHessian.step()`` on the steps between two Hessian estimates (``update_each > 1``):
    one step with a graph estimates D, every timed step reuses it (the update alone)."""
    opt = sparseopt.AdaHessian(params, update_each=10**9, seed=0)
    grads = [p.grad for p in params]
    with torch.enable_grad():
        loss = sum((p * p).sum() for p in params) / 2
        for p, g in zip(params, torch.autograd.grad(loss, params, create_graph=True)):
            p.grad = g
    opt.step()
    for p, g in zip(params, grads):
        p.grad = g
    return _step(opt)


def hutchinson_pass(params: list[torch.Tensor]) -> Callable[[], None]:
    """``hutchinson_diag_`` alone: D from z and Hz (conv weights averaged over their taps)."""
    zs, hzs = _hessian_inputs(params)
    diags = [torch.zeros_like(p) for p in params]
    hutch = sparseopt.ops.resolve("hutchinson_diag_", params[0].device, "native")
    return lambda: hutch(diags, zs, hzs, 1.0, False)


def naive_adahessian(params: list[torch.Tensor]) -> Callable[[], None]:
    zs, hzs = _hessian_inputs(params)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    t = [0]

    @torch.no_grad()
    def step() -> None:
        t[0] += 1
        bc1, bc2 = 1 - 0.9 ** t[0], 1 - 0.999 ** t[0]
        for p, z, hz, mi, vi in zip(params, zs, hzs, m, v):
            d = (z * hz).abs()
            if p.dim() == 4:
                d = d.mean(dim=(2, 3), keepdim=True).expand_as(p)
            mi.mul_(0.9).add_(p.grad, alpha=0.1)
            vi.mul_(0.999).addcmul_(d, d, value=0.001)
            denom = vi.sqrt() / math.sqrt(bc2) + 1e-4
            p.sub_(0.15 * (mi / bc1) / denom)

    return step


# Bytes per element: Adam reads w, g, m, v and writes w, m, v (28); AdaHessian additionally
# reads z and Hz and writes and reads D (40); its update alone reads w, g, m, v, D and writes
# w, m, v (32); its Hutchinson pass reads z, Hz and writes D (12). Half of that in bfloat16.
ROWS = [
    ("Adam: sparseopt native", lambda ps: _step(sparseopt.Adam(ps, lr=LR, backend="native")), 28),
    ("Adam: sparseopt reference",
     lambda ps: _step(sparseopt.Adam(ps, lr=LR, backend="reference")), 28),
    ("Adam: torch fused", lambda ps: _step(torch.optim.Adam(ps, lr=LR, fused=True)), 28),
    ("Adam: torch foreach", lambda ps: _step(torch.optim.Adam(ps, lr=LR, foreach=True)), 28),
    ("Adam: naive loop", naive_adam, 28),
    ("AdamW + l1 prox: sparseopt native",
     lambda ps: _step(sparseopt.AdamW(ps, lr=LR, l1=1e-4, backend="native")), 28),
    ("AdaHessian update (no backward): sparseopt native", fused_adahessian, 40),
    ("AdaHessian update (no backward): sparseopt reference",
     lambda ps: fused_adahessian(ps, "reference"), 40),
    ("AdaHessian update (no backward): naive loop", naive_adahessian, 40),
    ("AdaHessian.step() reusing D: sparseopt native", adahessian_reusing_d, 32),
    ("AdaHessian.step() reusing D (bf16): sparseopt native",
     in_dtype(torch.bfloat16, adahessian_reusing_d), 16),
    ("AdaHessian.step() reusing D (fp64): sparseopt native",
     in_dtype(torch.float64, adahessian_reusing_d), 64),
    ("AdaHessian Hutchinson pass: sparseopt native", hutchinson_pass, 12),
    ("AdaHessian Hutchinson pass (bf16): sparseopt native",
     in_dtype(torch.bfloat16, hutchinson_pass), 6),
]

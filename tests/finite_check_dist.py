"""check_finite=True across ranks; run by tests/test_distributed.py as

    torchrun --nproc_per_node 2 tests/finite_check_dist.py

Rank 1 puts a NaN into its own gradient (its FSDP2 shard, or its local gradient under
AdaHessian's process_group, before the averaging). Every rank must raise, not only rank 1 (a
rank raising alone would leave the others waiting in the next collective), nothing may change
on any rank, and a following finite step must go through on both. Exits non-zero otherwise.
"""

from __future__ import annotations

import gc
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import fully_shard

import sparseopt


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def model_fn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batch(rank: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 * t + rank)
    return torch.randn(4, 6, generator=gen).double(), torch.randint(0, 3, (4,), generator=gen)


def poison(model: nn.Module, rank: int) -> None:
    if rank == 1:
        with torch.no_grad():
            g = local(model[0].weight.grad)
            if g.numel():
                g.view(-1)[0] = float("nan")


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    out = [local(p).detach().clone() for p in model.parameters()]
    for st in opt.state.values():
        out += [local(v).detach().clone() for v in st.values() if isinstance(v, torch.Tensor)]
    return out


def check(case: str, model: nn.Module, opt: torch.optim.Optimizer, step, rank: int) -> bool:
    step(0)
    before = snapshot(model, opt)
    try:
        step(1, poison=True)
    except RuntimeError as e:
        expected = "has 1 NaN" if rank == 1 else "another rank"
        if expected not in str(e):
            say(f"FAIL {case} rank {rank}: unexpected message: {e}")
            return False
    else:
        say(f"FAIL {case} rank {rank}: the step with a NaN gradient did not raise")
        return False
    after = snapshot(model, opt)
    if len(before) != len(after) or not all(torch.equal(a, b) for a, b in zip(before, after)):
        say(f"FAIL {case} rank {rank}: something changed on a rejected step")
        return False
    step(2)  # a finite step still works on every rank (no rank is left waiting)
    say(f"ok {case} rank {rank}")
    return True


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ok = True

    model = model_fn()
    fully_shard(model)
    opt = sparseopt.ProxSGD(model.parameters(), lr=0.1, l1=1e-3, check_finite=True)

    def fsdp_step(t: int, **kw) -> None:
        opt.zero_grad()
        x, y = batch(rank, t)
        F.cross_entropy(model(x), y).backward()
        if kw.get("poison"):
            poison(model, rank)
        opt.step()

    ok &= check("fsdp2+ProxSGD", model, opt, fsdp_step, rank)

    hmodel = model_fn()
    hopt = sparseopt.AdaHessian(hmodel.parameters(), lr=0.05, seed=0, check_finite=True,
                                process_group=dist.group.WORLD)

    def hessian_step(t: int, **kw) -> None:
        hopt.zero_grad()
        x, y = batch(rank, t)
        F.cross_entropy(hmodel(x), y).backward(create_graph=True)
        if kw.get("poison"):
            poison(hmodel, rank)
        hopt.step()
        for p in hmodel.parameters():  # break the create_graph reference cycle
            p.grad = None

    ok &= check("AdaHessian(process_group)", hmodel, hopt, hessian_step, rank)
    model = opt = hmodel = hopt = None  # nothing distributed may outlive the process group
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Data-parallel training with a sparseopt optimizer under torch.distributed (DDP or FSDP2).

    torchrun --nproc_per_node 2 examples/ddp_train.py --optimizer irda --steps 20
    torchrun --nproc_per_node 2 examples/ddp_train.py --wrap fsdp2     # sharded parameters

Each rank trains on its slice of every global batch; DDP averages the gradients, and the
optimizer (an ordinary torch.optim.Optimizer) then takes the same fused step on every rank, so
the replicas stay identical. With ``--wrap fsdp2`` (``fully_shard``) each rank holds a shard of
every parameter, gradient and optimizer state as DTensors; the element-wise kernels run on the
local shards and ``sparseopt.sparsity`` reduces the zero counts across ranks. gloo on CPU, nccl
on CUDA. ``--save`` writes rank 0's final
parameters; run without torchrun (world size 1) to get the single-process run on the global
batch to compare with.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import sparseopt

OPTIMIZERS = {
    "proxsgd": lambda p: sparseopt.ProxSGD(p, lr=0.05, l1=1e-3, momentum=0.9),
    "sqrt_t_proxsgd": lambda p: sparseopt.SqrtTProxSGD(p, lr=0.05, l1=1e-4),
    "rda": lambda p: sparseopt.RDA(p, l1=1e-3, gamma=5.0),
    "irda": lambda p: sparseopt.IRDA(p, l1=1e-3, gamma=5.0, retrain_after=10),
    "adamw_l1": lambda p: sparseopt.AdamW(p, lr=1e-2, l1=1e-2),
}


def model_fn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--optimizer", default="irda",
                    help=f"one of {sorted(OPTIMIZERS)}, a comma-separated list, or 'all'")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32, help="global batch size")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--wrap", choices=["ddp", "fsdp2"], default="ddp")
    ap.add_argument("--save", default=None,
                    help="write rank 0's final parameters here ({optimizer: [tensors]})")
    args = ap.parse_args()
    names = sorted(OPTIMIZERS) if args.optimizer == "all" else args.optimizer.split(",")
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        ap.error(f"unknown optimizer(s) {unknown}; choose from {sorted(OPTIMIZERS)} or 'all'")

    distributed = "WORLD_SIZE" in os.environ
    cuda = torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be divisible by the world size {world}")
    dtype = getattr(torch, args.dtype)

    data = sparseopt.demo.load_digits()
    x, y = data.x_train.to(device, dtype), data.y_train.to(device)
    local = args.batch // world
    saved = {}
    for name in names:
        torch.manual_seed(0)  # the same initial model on every rank and for every optimizer
        model = model_fn().to(device=device, dtype=dtype)
        if distributed and args.wrap == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            fully_shard(model)
            net = model
        else:
            net = DDP(model) if distributed else model
        opt = OPTIMIZERS[name](model.parameters())
        for step in range(args.steps):
            start = (step * args.batch) % (len(y) - args.batch)
            xb = x[start + rank * local : start + (rank + 1) * local]
            yb = y[start + rank * local : start + (rank + 1) * local]
            opt.zero_grad()
            F.cross_entropy(net(xb), yb).backward()
            opt.step()
        full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
        saved[name] = [p.detach().cpu() for p in full]
        sparsity = sparseopt.sparsity(model)  # a collective under FSDP2: every rank calls it
        if rank == 0:
            print(f"{name}: world {world} ({args.wrap}), {args.steps} steps, "
                  f"sparsity {sparsity:.3f}")
    if rank == 0 and args.save:
        torch.save(saved, args.save)
    if distributed:
        # Every rank reaches this point before any tears down: a rank that exits while a peer
        # is still inside a gloo collective makes the peer abort.
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    import sparseopt.demo  # noqa: F401  (the digits loader)

    main()

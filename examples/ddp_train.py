"""Data-parallel training with a sparseopt optimizer under torch.distributed (DDP or FSDP2).

    torchrun --nproc_per_node 2 examples/ddp_train.py --optimizer irda --steps 20
    torchrun --nproc_per_node 2 examples/ddp_train.py --wrap fsdp2     # sharded parameters

Each rank trains on its slice of every global batch; DDP averages the gradients, and the
optimizer (an ordinary torch.optim.Optimizer) then takes the same fused step on every rank, so
the replicas stay identical. With ``--wrap fsdp2`` (``fully_shard``) each rank holds a shard of
every parameter, gradient and optimizer state as DTensors; the element-wise kernels run on the
local shards and ``sparseopt.sparsity`` reduces the zero counts across ranks. gloo on CPU, nccl
on CUDA. ``--save`` writes rank 0's final parameters (pDCA_e's sparse iterate x); run without
torchrun (world size 1) to get the single-process run on the global batch to compare with.

AdaHessian needs ``backward(create_graph=True)``, which DDP's gradient reduction cannot handle
(it fails inside backward): its forward and backward run under ``ddp.no_sync()`` and
``AdaHessian(process_group=...)`` averages the gradients and the Hessian-vector products across
the ranks itself. FSDP2 cannot give it Hessian-vector products at all (it reduce-scatters the
gradients without their graph), so ``--optimizer all`` leaves it out under ``--wrap fsdp2`` and
naming it there raises AdaHessian's error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import sparseopt

# Each factory takes the parameters and the process group to average over (None: one process).
# Only AdaHessian uses the group: it averages the gradients and its Hessian estimate itself (DDP
# cannot reduce gradients that carry a graph, see main()); the others rely on DDP/FSDP2.
OPTIMIZERS = {
    "proxsgd": lambda p, pg: sparseopt.ProxSGD(p, lr=0.05, l1=1e-3, momentum=0.9),
    "sqrt_t_proxsgd": lambda p, pg: sparseopt.SqrtTProxSGD(p, lr=0.05, l1=1e-4),
    "rda": lambda p, pg: sparseopt.RDA(p, l1=1e-3, gamma=5.0),
    "irda": lambda p, pg: sparseopt.IRDA(p, l1=1e-3, gamma=5.0, retrain_after=10),
    "adamw_l1": lambda p, pg: sparseopt.AdamW(p, lr=1e-2, l1=1e-2),
    # Epochs of 5 steps: Prox-SG, orthant, Prox-SG, orthant phases in 20 steps.
    "obproxsg": lambda p, pg: sparseopt.OBProxSG(p, lr=0.05, l1=1e-2, n_p=1, n_o=1,
                                                 steps_per_epoch=5),
    "obproxsg_plus": lambda p, pg: sparseopt.OBProxSGPlus(p, lr=0.05, l1=1e-2, n_p=1,
                                                          steps_per_epoch=8),
    "pdca": lambda p, pg: sparseopt.PDCA(p, lr=0.05, l1=1e-2, theta=5.0, restart=7),
    "adahessian": lambda p, pg: sparseopt.AdaHessian(p, lr=0.05, seed=0, process_group=pg),
}
SECOND_ORDER = {"adahessian"}  # needs backward(create_graph=True)


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
    if args.optimizer != "all":
        names = args.optimizer.split(",")
    elif args.wrap == "fsdp2" and "WORLD_SIZE" in os.environ:
        # AdaHessian cannot run sharded: FSDP2 reduce-scatters the gradients without their
        # graph, so there is no Hessian-vector product to take (AdaHessian raises saying so).
        names = sorted(set(OPTIMIZERS) - SECOND_ORDER)
    else:
        names = sorted(OPTIMIZERS)
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
    group = dist.group.WORLD if distributed else None
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
        opt = OPTIMIZERS[name](model.parameters(), group)
        hessian = name in SECOND_ORDER
        # DDP's reducer cannot all-reduce gradients that carry a graph (backward with
        # create_graph=True fails inside it), so AdaHessian's forward and backward run under
        # no_sync() and AdaHessian(process_group=...) averages the gradients and its Hessian
        # estimate across the ranks itself.
        no_sync = net.no_sync if hessian and isinstance(net, DDP) else contextlib.nullcontext
        for step in range(args.steps):
            start = (step * args.batch) % (len(y) - args.batch)
            xb = x[start + rank * local : start + (rank + 1) * local]
            yb = y[start + rank * local : start + (rank + 1) * local]
            opt.zero_grad()
            with no_sync():
                F.cross_entropy(net(xb), yb).backward(create_graph=hessian)
            opt.step()
        # pDCA_e's parameters hold the extrapolated point y; its sparse iterate x is the result.
        export = opt.eval_params() if isinstance(opt, sparseopt.PDCA) else contextlib.nullcontext()
        with export:
            full = [p.full_tensor() if hasattr(p, "full_tensor") else p.detach().clone()
                    for p in model.parameters()]
            sparsity = sparseopt.sparsity(model)  # a collective under FSDP2: every rank calls it
        saved[name] = [p.detach().cpu() for p in full]
        if rank == 0:
            print(f"{name}: world {world} ({args.wrap}), {args.steps} steps, "
                  f"sparsity {sparsity:.3f}")
        # Free this run's DDP wrapper now, while the process group is alive: left to the cyclic
        # garbage collector it may be torn down after destroy_process_group(), and a DDP reducer
        # destroyed without its group can hang the process at exit.
        del net, model, opt, full, export
        gc.collect()
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

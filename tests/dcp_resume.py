"""torch.distributed.checkpoint round trip under FSDP2 or DDP; run by tests/test_distributed.py as

    torchrun --nproc_per_node 2 tests/dcp_resume.py --dir DIR --optimizer irda,adamw_l1
    torchrun --nproc_per_node 2 tests/dcp_resume.py --dir DIR --optimizer adahessian --wrap ddp

For each optimizer (the factories of examples/ddp_train.py): train ``--steps`` steps unbroken;
then train ``--split`` steps, save model and optimizer with ``get_state_dict`` + ``dcp.save``,
build a fresh model (other initial weights) and a fresh optimizer, ``dcp.load`` +
``set_state_dict``, train the remaining steps. Every rank checks that its shards of the
parameters and of every optimizer state tensor equal the unbroken run's bit for bit (and, under
FSDP2, that the loaded state really is sharded like the parameters); exits non-zero otherwise.
AdaHessian (DDP only: FSDP2 cannot give it Hessian-vector products) trains as in the example:
forward and backward(create_graph=True) under ``no_sync()``, ``process_group=`` averaging.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

import sparseopt

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ddp_train.py"


def load_example():
    spec = importlib.util.spec_from_file_location("ddp_train", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def say(line: str) -> None:
    """Print one line in one write, so that the ranks' lines never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--optimizer", required=True, help="comma-separated names")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--split", type=int, default=7)
    ap.add_argument("--wrap", choices=["fsdp2", "ddp"], default="fsdp2")
    ap.add_argument("--check-adahessian-error", action="store_true",
                    help="(fsdp2) also check that AdaHessian refuses FSDP2 and changes nothing")
    args = ap.parse_args()
    example = load_example()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.steps, 8 * world, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (args.steps, 8 * world), generator=gen)

    fsdp2 = args.wrap == "fsdp2"

    def make_model(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)  # the same initial weights on every rank
        model = example.model_fn().to(torch.float64)
        if fsdp2:
            fully_shard(model)
            return model
        return DDP(model)

    def build(name: str, seed: int):
        model = make_model(seed)
        return model, example.OPTIMIZERS[name](model.parameters(), dist.group.WORLD)

    def train(model, opt, start: int, stop: int) -> None:
        hessian = isinstance(opt, sparseopt.AdaHessian)
        no_sync = model.no_sync if hessian and not fsdp2 else contextlib.nullcontext
        for t in range(start, stop):
            xb, yb = x[t, rank * 8 : (rank + 1) * 8], y[t, rank * 8 : (rank + 1) * 8]
            opt.zero_grad()
            with no_sync():
                F.cross_entropy(model(xb), yb).backward(create_graph=hessian)
            opt.step()

    def snapshot(model, opt) -> list[tuple[str, torch.Tensor]]:
        out = []
        for i, p in enumerate(model.parameters()):
            assert isinstance(p, DTensor) == fsdp2, "fully_shard makes DTensor parameters"
            out.append((f"param {i}", local(p).detach().clone()))
            for key, value in sorted(opt.state[p].items()):
                if isinstance(value, torch.Tensor):
                    if fsdp2 and value.dim() > 0:  # per-element state: sharded like its param
                        assert isinstance(value, DTensor) and value.placements == p.placements, (
                            f"state '{key}' of param {i} is {type(value).__name__}"
                        )
                    out.append((f"state '{key}' of param {i}", local(value).clone()))
                else:
                    out.append((f"state '{key}' of param {i}", torch.tensor(value)))
        extra = opt.state_dict()["param_groups"][0].get("adahessian")
        if extra is not None:  # AdaHessian: the probe stream and the Hessian-step count
            out.append(("adahessian seed", torch.tensor(extra["seed"])))
            out.append(("adahessian hessian_steps", torch.tensor(extra["hessian_steps"])))
            for device, gen_state in sorted(extra["generator_states"].items()):
                out.append((f"adahessian generator {device}", gen_state))
        return out

    failures = []
    for name in filter(None, args.optimizer.split(",")):
        model, opt = build(name, seed=0)
        train(model, opt, 0, args.steps)
        unbroken = snapshot(model, opt)

        model, opt = build(name, seed=0)
        train(model, opt, 0, args.split)
        model_sd, optim_sd = get_state_dict(model, opt)
        checkpoint = f"{args.dir}/{name}"
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=checkpoint)
        del model, opt, model_sd, optim_sd

        model, opt = build(name, seed=123)  # other weights: the load must replace them
        model_sd, optim_sd = get_state_dict(model, opt)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=checkpoint)
        set_state_dict(model, opt, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        train(model, opt, args.split, args.steps)
        resumed = snapshot(model, opt)

        assert [k for k, _ in resumed] == [k for k, _ in unbroken], name
        bad = [k for (k, a), (_, b) in zip(unbroken, resumed)
               if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b)]
        if bad:
            failures.append(f"{name}: {bad}")
        say(f"rank {rank}: {name}: {'MISMATCH ' + str(bad) if bad else 'bit-exact'}")
        # No DDP/FSDP wrapper may outlive the process group (a reducer torn down after
        # destroy_process_group() can hang the process at exit): free them while it is alive.
        del model, opt, model_sd, optim_sd, state
        gc.collect()
    if args.check_adahessian_error and fsdp2:
        model = make_model(seed=0)
        opt = sparseopt.AdaHessian(model.parameters(), seed=0, process_group=dist.group.WORLD)
        before = [local(p).detach().clone() for p in model.parameters()]
        F.cross_entropy(model(x[0, :8]), y[0, :8]).backward(create_graph=True)
        try:
            opt.step()
            failures.append("AdaHessian stepped under FSDP2")
        except RuntimeError as e:
            unchanged = all(torch.equal(a, local(p)) for a, p in zip(before, model.parameters()))
            if not unchanged or opt.state:
                failures.append("AdaHessian changed parameters or state before raising")
            say(f"rank {rank}: adahessian under fsdp2: {e}")
        # The gradients still hold the double-backward graph (and a reference cycle with their
        # parameters): free it before the process group goes.
        model.zero_grad(set_to_none=True)
        del model, opt
        gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    if failures:
        sys.exit(f"rank {rank}: failed: {failures}")


if __name__ == "__main__":
    main()

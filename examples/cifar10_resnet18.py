"""The iRDA paper's CIFAR-10 protocol: ResNet18, batch 128, iRDA (lambda = 1e-6, gamma = 1) with
its initialisation, Step 1 then iterative retraining.

    python examples/cifar10_resnet18.py --data ~/datasets/cifar10 --device cuda --amp

``--data`` is a local folder holding CIFAR-10's python version (``cifar-10-batches-py/`` or its
files ``data_batch_1..5`` and ``test_batch`` directly); nothing is downloaded. A checkpoint
(model, optimizer, GradScaler, epoch, RNG) is written after every epoch; ``--resume`` continues
from it and gives the same run as an unbroken one.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import sparseopt
from sparseopt.models import resnet18_cifar

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def find_batches(root: Path) -> Path:
    for cand in (root, root / "cifar-10-batches-py"):
        if (cand / "data_batch_1").is_file() and (cand / "test_batch").is_file():
            return cand
    raise FileNotFoundError(
        f"no CIFAR-10 python batches under {str(root)!r}: expected data_batch_1..5 and "
        "test_batch there or in cifar-10-batches-py/ (the 'CIFAR-10 python version' from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, unpacked)"
    )


def load_split(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            continue
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    if not xs:
        raise FileNotFoundError(f"none of {names} found in {folder}")
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.from_numpy(np.concatenate(ys))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop (pad 4) and horizontal flip, on whole batches."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    i, j = torch.randint(0, 9, (2,), generator=gen).tolist()
    out = padded[:, :, i : i + 32, j : j + 32]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip.view(n, 1, 1, 1).to(x.device), out.flip(3), out)


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for k in range(0, len(y), 500):
            correct += (model(x[k : k + 500].to(device)).argmax(1).cpu() == y[k : k + 500]).sum()
    model.train()
    return float(correct) / len(y)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder with CIFAR-10's python batches")
    ap.add_argument("--epochs", type=int, default=120, help="iRDA Step 1 epochs (paper: 120)")
    ap.add_argument("--retrain-epochs", type=int, default=40, help="Step 2 epochs")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--l1", type=float, default=1e-6)
    ap.add_argument("--gamma", type=float, default=1.0)
    ap.add_argument("--s", type=float, default=10.0, help="iRDA init scale (paper Table 5)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", action="store_true", help="mixed precision with GradScaler")
    ap.add_argument("--checkpoint", default="cifar10_irda.pt")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--limit-batches", type=int, default=0, help="batches per epoch (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    try:
        folder = find_batches(Path(args.data).expanduser())
        x_train, y_train = load_split(folder, [f"data_batch_{i}" for i in range(1, 6)])
        x_test, y_test = load_split(folder, ["test_batch"])
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    torch.manual_seed(args.seed)
    model = resnet18_cifar(num_classes=10)
    sparseopt.init.irda_model_(model, s=args.s)
    model.to(args.device)
    steps_per_epoch = len(y_train) // args.batch
    if args.limit_batches:
        steps_per_epoch = min(steps_per_epoch, args.limit_batches)
    opt = sparseopt.IRDA(model.parameters(), l1=args.l1, gamma=args.gamma,
                         retrain_after=args.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(args.device.split(":")[0], enabled=args.amp)
    amp_dtype = torch.float16 if args.device.startswith("cuda") else torch.bfloat16
    gen = torch.Generator().manual_seed(args.seed)
    start_epoch = 0
    ckpt = Path(args.checkpoint)
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        gen.set_state(state["generator"])
        start_epoch = state["epoch"]
        print(f"resumed from {ckpt} at epoch {start_epoch}")

    total = args.epochs + args.retrain_epochs
    for epoch in range(start_epoch, total):
        t0 = time.perf_counter()
        perm = torch.randperm(len(y_train), generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch : (b + 1) * args.batch]
            xb = augment(x_train[idx], gen).to(args.device, non_blocking=True)
            yb = y_train[idx].to(args.device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(args.device.split(":")[0], dtype=amp_dtype, enabled=args.amp):
                loss = F.cross_entropy(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        acc = evaluate(model, x_test, y_test, args.device)
        phase = "retraining" if opt.in_retraining else "step 1"
        print(f"epoch {epoch + 1}/{total} ({phase}): loss {loss.item():.3f} test acc {acc:.2%} "
              f"sparsity {sparseopt.sparsity(model):.2%} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        torch.save(dict(model=model.state_dict(), optimizer=opt.state_dict(),
                        scaler=scaler.state_dict(), generator=gen.get_state(), epoch=epoch + 1),
                   ckpt)
    print(sparseopt.sparsity_report(model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

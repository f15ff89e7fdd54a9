"""One optimizer step on a ResNet18-CIFAR-shaped parameter set (62 tensors, 11.2M params).

Every row times one ``step()`` (gradients precomputed, no forward/backward) and reports the
time, the effective bandwidth (bytes the rule must read and write per element / time), the
ratio of that bandwidth to an in-place stream-add (``a += b``) measured in the same run, and
speed-ups over the naive per-parameter loop of the same rule. With ``--rounds R`` the whole
table is measured R times, rows interleaved, and each figure is the median over the rounds.

Rows come from ``benchmarks/optim_rows_*.py``: each exposes ``ROWS``, a list of
``(name, factory, bytes_per_element)`` where ``factory(params)`` gets fp32 parameters whose
``.grad`` is set and returns a zero-argument callable doing one step. Names are
``"<Rule>: <variant>"``; the variant ``naive loop`` is the speed-up baseline of its rule.
Rows in another dtype wrap their factory in :func:`in_dtype` (bytes per element are then those
of that dtype).

    python benchmarks/bench_optim.py [--quick] [--rounds R] [--device cpu|cuda] [--out bench_out]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def resnet18_cifar_shapes(num_classes: int = 10) -> list[tuple[int, ...]]:
    """Parameter shapes of ResNet18 for CIFAR (3x3 stem, projection shortcuts): 62 tensors."""
    shapes: list[tuple[int, ...]] = [(64, 3, 3, 3), (64,), (64,)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            shapes += [(cout, cin, 3, 3), (cout,), (cout,), (cout, cout, 3, 3), (cout,), (cout,)]
            if s != 1 or cin != cout:
                shapes += [(cout, cin, 1, 1), (cout,), (cout,)]
            cin = cout
    shapes += [(num_classes, 512), (num_classes,)]
    return shapes


def make_params(device: str, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in resnet18_cifar_shapes():
        p = torch.randn(shape, generator=gen).mul_(0.05).to(device).requires_grad_()
        p.grad = torch.randn(shape, generator=gen).mul_(1e-3).to(device)
        params.append(p)
    return params


def in_dtype(dtype: torch.dtype, factory: Callable) -> Callable:
    """``factory`` run on copies of the parameters (and their gradients) in ``dtype``."""

    def run(params: list[torch.Tensor]) -> Callable[[], None]:
        cast = []
        for p in params:
            q = p.detach().to(dtype).requires_grad_()
            q.grad = p.grad.to(dtype)
            cast.append(q)
        return factory(cast)

    return run


def load_rows() -> list[tuple[str, Callable, int]]:
    rows = []
    for path in sorted(HERE.glob("optim_rows_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        rows += module.ROWS
    return rows


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], None], device: str, reps: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stream_add(device: str, numel: int, reps: int) -> float:
    """GB/s of ``a += b`` over ``numel`` fp32 elements (reads 2, writes 1: 12 bytes/element)."""
    a = torch.randn(numel, device=device)
    b = torch.randn(numel, device=device)
    t = time_fn(lambda: a.add_(b), device, reps)
    return 12 * numel / t / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--naive-reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure the whole table this many times, rows interleaved; medians")
    ap.add_argument("--only", default="", help="comma-separated substrings of row names")
    ap.add_argument("--out", default="bench_out")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.naive_reps = 5, 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    try:
        import sparseopt  # the installed package (editable or not)
    except ImportError:  # not installed: the checkout this script sits in (built in place)
        sys.path.insert(0, str(HERE.parent))
        import sparseopt

    params = make_params(args.device)
    numel = sum(p.numel() for p in params)
    # The stream-add is re-measured between rows and each row is compared with the mean of the
    # two measured next to it: this VM's memory bandwidth drifts (35-90 GB/s within one run),
    # and a neighbouring measurement sees the same conditions as the row.
    bw_samples = [stream_add(args.device, numel, args.reps)]
    wanted = [s for s in args.only.split(",") if s]
    rows = [r for r in load_rows() if not wanted or any(w in r[0] for w in wanted)]
    per_round: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for name, factory, nbytes in rows:
            fresh = make_params(args.device)
            try:
                step = factory(fresh)
            except (RuntimeError, ValueError) as exc:  # e.g. a torch build without fused CPU
                print(f"skip {name}: {exc}", file=sys.stderr)
                continue
            reps = args.naive_reps if "naive" in name else args.reps
            t = time_fn(step, args.device, reps, warmup=1 if "naive" in name else 3)
            del fresh, step
            bw_samples.append(stream_add(args.device, numel, args.reps))
            adjacent = (bw_samples[-2] + bw_samples[-1]) / 2
            gbs = nbytes * numel / t / 1e9
            per_round.setdefault(name, []).append(
                dict(ms=1e3 * t, gb_s=gbs, stream_add_gb_s=adjacent, of_stream_add=gbs / adjacent))
    results = []
    for name, _, nbytes in rows:
        if name not in per_round:
            continue
        rounds = per_round[name]
        r = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
        results.append(dict(row=name, bytes_per_element=nbytes, rounds=len(rounds), **r))
    bw_ref = statistics.median(bw_samples)
    naive = {r["row"].split(":")[0]: r["ms"] for r in results if r["row"].endswith("naive loop")}
    for r in results:
        base = naive.get(r["row"].split(":")[0])
        r["vs_naive"] = base / r["ms"] if base else None

    meta = dict(
        device=args.device,
        device_name=(torch.cuda.get_device_name() if args.device.startswith("cuda")
                     else platform.processor() or platform.machine()),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        sparseopt=sparseopt.__version__,
        backends=sparseopt.backend_info()["backends"],
        numel=numel,
        tensors=len(params),
        stream_add_gb_s=bw_ref,
        stream_add_samples_gb_s=bw_samples,
        rounds=args.rounds,
    )
    lines = [
        f"ResNet18-CIFAR parameter set: {len(params)} tensors, {numel / 1e6:.2f}M fp32 params, "
        f"device {meta['device']} ({meta['device_name']}), {meta['threads']} threads, "
        f"torch {meta['torch']}; stream-add a += b: median {bw_ref:.1f} GB/s "
        f"(range {min(bw_samples):.0f}-{max(bw_samples):.0f}; each row is compared with the "
        f"stream-adds measured next to it; medians over {args.rounds} interleaved round(s))",
        "",
        "| row | ms/step | GB/s | stream-add GB/s (adjacent) | of stream-add | vs naive loop |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vs = f"{r['vs_naive']:.1f}x" if r["vs_naive"] else ""
        lines.append(f"| {r['row']} | {r['ms']:.2f} | {r['gb_s']:.1f} | "
                     f"{r['stream_add_gb_s']:.1f} | {r['of_stream_add']:.2f} | {vs} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"optim_{args.device.split(':')[0]}"
    (out / f"{tag}.json").write_text(json.dumps(dict(meta=meta, rows=results), indent=2))
    (out / f"{tag}.md").write_text(table + "\n")
    with open(out / f"{tag}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]) if results else ["row"])
        w.writeheader()
        w.writerows(results)
    print(f"\nwrote {out / tag}.json, .csv and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    raise SystemExit(main())

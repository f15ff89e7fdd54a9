"""Sparse vs dense convolutions on the CPU: every MobileNetV1 layer shape, and the whole network.

Dense and sparse are timed in alternating rounds, best round of each (the machine is shared).
For each distinct pointwise (1x1) and depthwise (3x3) layer shape of MobileNetV1 (width 1.0,
224x224 input), at several fractions of zero weights and two batch sizes, times the compressed
sparse op (``torch.ops.sparseopt.csr_pointwise_conv2d`` / ``sparse_depthwise_conv2d``) against
the dense ``torch.nn.functional.conv2d`` on the same (sparse) weight, in the same run. Then the
whole MobileNetV1 at 90% zeros in every 1x1 and depthwise weight: dense ``nn.Conv2d`` model vs
``sparsify`` + ``compress``, both as built (eager BatchNorm) and both with BatchNorm folded into
the convolutions (``sparseopt.nn.fold_batchnorm``). Prints a markdown table, writes ``bench_out/conv.json`` and the plot
``bench_out/conv_speedup.png``, and reports the measured dense-fallback threshold.

    python benchmarks/bench_conv.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_conv.py --quick    # 0% and 90%, batch 1, short timings
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import sparseopt
from sparseopt.models import MOBILENET_V1_BODY, mobilenet_v1
from sparseopt.nn.formats import dense_to_csr, dense_to_taps


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timeit_pair(a: Callable[[], object], b: Callable[[], object], budget: float) -> tuple[float, float]:
    """Seconds per call of a and of b, timed in alternating rounds (so a drift of the shared
    machine's speed hits both alike), the best round of each."""
    a(), b(), a(), b()
    t0 = time.perf_counter()
    a()
    b()
    one = max(time.perf_counter() - t0, 1e-6)
    rounds = 8
    reps = max(1, int(budget / rounds / one))
    best_a = best_b = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            a()
        t1 = time.perf_counter()
        for _ in range(reps):
            b()
        t2 = time.perf_counter()
        best_a, best_b = min(best_a, (t1 - t0) / reps), min(best_b, (t2 - t1) / reps)
    return best_a, best_b


def layer_shapes() -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Distinct (Cin, Cout, H) pointwise and (C, H_in, stride) depthwise shapes, 224 input."""
    pw, dw = [], []
    c, h = 32, 112
    for cout, stride in MOBILENET_V1_BODY:
        if (c, h, stride) not in dw:
            dw.append((c, h, stride))
        h = h // stride
        if (c, cout, h) not in pw:
            pw.append((c, cout, h))
        c = cout
    return pw, dw


def prune(w: torch.Tensor, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    w = w.clone()
    k = int(round(sparsity * w.numel()))
    w.view(-1)[torch.randperm(w.numel(), generator=gen)[:k]] = 0
    return w


def bench_layers(sparsities: list[float], batches: list[int], budget: float) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    pw_shapes, dw_shapes = layer_shapes()
    rows = []
    with torch.no_grad():
        for n in batches:
            for cin, cout, h in pw_shapes:
                x = torch.randn(n, cin, h, h, generator=gen)
                w0 = torch.randn(cout, cin, 1, 1, generator=gen)
                b = torch.randn(cout, generator=gen)
                for s in sparsities:
                    w = prune(w0, s, gen)
                    rp, ci, v = dense_to_csr(w)
                    dense_t, sparse_t = timeit_pair(
                        lambda: F.conv2d(x, w, b),
                        lambda: torch.ops.sparseopt.csr_pointwise_conv2d(x, rp, ci, v, b), budget)
                    err = (torch.ops.sparseopt.csr_pointwise_conv2d(x, rp, ci, v, b) - F.conv2d(x, w, b)).abs().max().item()
                    rows.append(dict(kind="pointwise", shape=f"{cin}->{cout} @{h}x{h}", batch=n, sparsity=s,
                                     dense_ms=dense_t * 1e3, sparse_ms=sparse_t * 1e3,
                                     speedup=dense_t / sparse_t, max_abs_err=err))
                    print(_fmt(rows[-1]), flush=True)
            for c, h, stride in dw_shapes:
                x = torch.randn(n, c, h, h, generator=gen)
                w0 = torch.randn(c, 1, 3, 3, generator=gen)
                b = torch.randn(c, generator=gen)
                for s in sparsities:
                    w = prune(w0, s, gen)
                    tp, ti, v = dense_to_taps(w)
                    dense_t, sparse_t = timeit_pair(
                        lambda: F.conv2d(x, w, b, stride=stride, padding=1, groups=c),
                        lambda: torch.ops.sparseopt.sparse_depthwise_conv2d(
                            x, tp, ti, v, b, [3, 3], [stride, stride], [1, 1]), budget)
                    ref = F.conv2d(x, w, b, stride=stride, padding=1, groups=c)
                    got = torch.ops.sparseopt.sparse_depthwise_conv2d(x, tp, ti, v, b, [3, 3], [stride, stride], [1, 1])
                    rows.append(dict(kind="depthwise", shape=f"dw{c} s{stride} @{h}x{h}", batch=n, sparsity=s,
                                     dense_ms=dense_t * 1e3, sparse_ms=sparse_t * 1e3,
                                     speedup=dense_t / sparse_t, max_abs_err=(got - ref).abs().max().item()))
                    print(_fmt(rows[-1]), flush=True)
    return rows


def bench_network(batches: list[int], sparsity: float, budget: float) -> list[dict]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    dense = mobilenet_v1(num_classes=1000, width_mult=1.0, input_size=224).eval()
    with torch.no_grad():
        for m in dense.modules():
            if isinstance(m, nn.Conv2d) and (m.kernel_size == (1, 1) or m.groups > 1):
                m.weight.copy_(prune(m.weight, sparsity, gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    rows = []
    with torch.no_grad():
        for variant in ("eager", "BN folded"):
            d = copy.deepcopy(dense)
            if variant == "BN folded":  # the same inference transform on both sides
                sparseopt.nn.fold_batchnorm(d)
            sp = sparseopt.nn.compress(sparseopt.nn.sparsify(copy.deepcopy(d)).eval())
            for n in batches:
                x = torch.randn(n, 3, 224, 224, generator=gen)
                err = (sp(x) - d(x)).abs().max().item()
                dt, st = timeit_pair(lambda: d(x), lambda: sp(x), budget * 4)
                rows.append(dict(kind="network", shape=f"MobileNetV1 1.0 224, {variant}", batch=n,
                                 sparsity=sparsity, dense_ms=dt * 1e3, sparse_ms=st * 1e3,
                                 speedup=dt / st, max_abs_err=err))
                print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(r: dict) -> str:
    return (f"| {r['kind']} | {r['shape']} | {r['batch']} | {r['sparsity'] * 100:.0f}% | {r['dense_ms']:.3f} | "
            f"{r['sparse_ms']:.3f} | {r['speedup']:.2f}x |")


def fallback_thresholds(rows: list[dict]) -> dict[str, dict]:
    """Per kind and zero fraction: geometric-mean speed-up, worst case, and how many of the
    (shape, batch) cases the sparse kernel loses; plus the smallest zero fraction from which it
    wins on every case measured. The dense fallback threshold is chosen from these (see
    benchmarks/RESULTS_conv.md)."""
    out = {}
    for kind in ("pointwise", "depthwise"):
        rs = [r for r in rows if r["kind"] == kind]
        levels = sorted({r["sparsity"] for r in rs})
        per_level = {}
        for s in levels:
            sp = [r["speedup"] for r in rs if r["sparsity"] == s]
            per_level[s] = dict(geomean=round(math.exp(sum(map(math.log, sp)) / len(sp)), 3),
                                worst=round(min(sp), 3), losing=sum(x < 1.0 for x in sp), cases=len(sp))
        wins = [s for s in levels if all(r["speedup"] >= 1.0 for r in rs if r["sparsity"] >= s)]
        out[kind] = dict(per_sparsity=per_level, all_win_from_sparsity=min(wins) if wins else None,
                         losing=[(r["shape"], r["batch"], r["sparsity"], round(r["speedup"], 2))
                                 for r in rs if r["speedup"] < 1.0])
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows if r["kind"] != "network"})
    fig, axes = plt.subplots(2, len(batches), figsize=(6.5 * len(batches), 9), squeeze=False)
    for i, kind in enumerate(("pointwise", "depthwise")):
        for j, n in enumerate(batches):
            ax = axes[i][j]
            rs = [r for r in rows if r["kind"] == kind and r["batch"] == n]
            for shape in dict.fromkeys(r["shape"] for r in rs):
                pts = sorted((r["sparsity"] * 100, r["speedup"]) for r in rs if r["shape"] == shape)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=shape)
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.set_yscale("log")
            ax.set_title(f"{kind}, batch {n}")
            ax.set_xlabel("zero weights (%)")
            ax.set_ylabel("speed-up over dense F.conv2d")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"sparseopt sparse conv vs dense, {cpu_name()}, {torch.get_num_threads()} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="0%% and 90%% zeros, batch 1, short timings")
    ap.add_argument("--out", default="bench_out", help="output folder (default bench_out)")
    ap.add_argument("--device", default="cpu",
                    help="cpu (the sparse layers' inference kernels are measured on the CPU; "
                         "any other device is skipped, so `python -m sparseopt.bench --device "
                         "cuda` runs the optimizer benchmark alone)")
    args = ap.parse_args()
    if args.device != "cpu":
        print(f"bench_conv: measures CPU inference; skipped for --device {args.device}")
        return
    lines: list[str] = []

    def emit(text: str = "") -> None:  # printed, and kept for conv.md
        print(text)
        lines.append(text)
    if args.quick:
        sparsities, batches, net_batches, budget = [0.0, 0.9], [1], [1], 0.1
    else:
        sparsities, batches, net_batches, budget = [0.0, 0.5, 0.7, 0.9, 0.95], [1, 32], [1, 8], 0.3
    os.makedirs(args.out, exist_ok=True)
    info = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(),
                threads=torch.get_num_threads(), torch=torch.__version__,
                sparseopt=sparseopt.__version__, backend=sparseopt.backend_info())
    emit(f"# bench_conv: {info['cpu']}, {info['threads']} threads, torch {info['torch']}, {info['date']}")
    print("| kind | shape | batch | zeros | dense ms | sparse ms | speed-up |")  # rows live, not
    print("|---|---|---|---|---|---|---|")  # in conv.md (its tables below hold the same numbers)
    rows = bench_layers(sparsities, batches, budget)
    rows += bench_network(net_batches, 0.9, budget)
    thresholds = fallback_thresholds(rows)
    levels = sorted({r["sparsity"] for r in rows if r["kind"] != "network"})
    emit("\nspeed-up of the sparse kernel over dense F.conv2d (dense time in ms):")
    emit("| kind | shape | batch | dense ms | " + " | ".join(f"{s * 100:.0f}%" for s in levels) + " |")
    emit("|---|---|---|---|" + "---|" * len(levels))
    seen = dict.fromkeys((r["kind"], r["shape"], r["batch"]) for r in rows if r["kind"] != "network")
    for kind, shape, n in seen:
        rs = {r["sparsity"]: r for r in rows if (r["kind"], r["shape"], r["batch"]) == (kind, shape, n)}
        cells = " | ".join(f"{rs[s]['speedup']:.2f}x" if s in rs else "" for s in levels)
        emit(f"| {kind} | {shape} | {n} | {next(iter(rs.values()))['dense_ms']:.3f} | {cells} |")
    emit("\nwhole network:")
    emit("| model | batch | zeros | dense ms | sparse ms | speed-up |")
    emit("|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "network":
            emit(f"| {r['shape']} | {r['batch']} | {r['sparsity'] * 100:.0f}% | {r['dense_ms']:.2f} | "
                  f"{r['sparse_ms']:.2f} | {r['speedup']:.2f}x |")
    emit("\nsparse vs dense per zero fraction (for the dense-fallback threshold):")
    emit("| kind | zeros | geomean speed-up | worst | cases sparse loses |")
    emit("|---|---|---|---|---|")
    for kind, t in thresholds.items():
        for s, v in t["per_sparsity"].items():
            emit(f"| {kind} | {s * 100:.0f}% | {v['geomean']:.2f}x | {v['worst']:.2f}x | {v['losing']}/{v['cases']} |")
    for kind, t in thresholds.items():
        emit(f"{kind}: sparse wins on every case from {t['all_win_from_sparsity']} zeros; "
              f"current DENSE_FALLBACK_DENSITY = {sparseopt.nn.DENSE_FALLBACK_DENSITY[kind]}")
    with open(os.path.join(args.out, "conv.json"), "w") as f:
        json.dump(dict(info=info, rows=rows, thresholds=thresholds), f, indent=1, default=str)
    plot(rows, os.path.join(args.out, "conv_speedup.png"))
    with open(os.path.join(args.out, "conv.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/conv.json, {args.out}/conv.md and {args.out}/conv_speedup.png")


if __name__ == "__main__":
    main()

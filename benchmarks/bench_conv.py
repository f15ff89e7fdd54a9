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

The same cases run under pytest-benchmark (benchmarks/test_bench_conv.py, ``make bench``);
benchmarks/write_results.py renders these tables from that run's JSON (:func:`from_pytest_json`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

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


# Timing rounds per case (the best round of each side is kept), the seconds a layer case may
# take (both sides together), and the whole network's multiple of that budget.
ROUNDS = 8
NETWORK_BUDGET_FACTOR = 4
NETWORK_VARIANTS = ("eager", "BN folded")
NETWORK_SPARSITY = 0.9


@dataclass(frozen=True)
class Settings:
    sparsities: list[float]
    batches: list[int]
    net_batches: list[int]
    budget: float  # seconds per layer case, dense and sparse together


def settings(quick: bool) -> Settings:
    if quick:
        return Settings([0.0, 0.9], [1], [1], 0.1)
    return Settings([0.0, 0.5, 0.7, 0.9, 0.95], [1, 32], [1, 8], 0.3)


def run_date(data: dict) -> str:
    """The date of a pytest-benchmark JSON as the scripts write theirs."""
    try:
        return datetime.fromisoformat(data["datetime"]).astimezone(timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
    except (KeyError, ValueError):
        return "?"


def reps_for(seconds_per_call: float, budget: float, rounds: int = ROUNDS) -> int:
    """Calls per round so that ``rounds`` rounds of a ``seconds_per_call`` call take ``budget``."""
    return max(1, int(budget / rounds / max(seconds_per_call, 1e-6)))


def calibrate(fn: Callable[[], object], budget: float) -> int:
    """Calls per round of ``fn`` timed alone (pytest-benchmark, one side of a pair per test):
    the reps :func:`timeit_pair` would give it, from half the pair's budget."""
    fn(), fn()
    t0 = time.perf_counter()
    fn()
    return reps_for(time.perf_counter() - t0, budget / 2)


def timeit_pair(a: Callable[[], object], b: Callable[[], object], budget: float) -> tuple[float, float]:
    """Seconds per call of a and of b, timed in alternating rounds (so a drift of the shared
    machine's speed hits both alike), the best round of each."""
    a(), b(), a(), b()
    t0 = time.perf_counter()
    a()
    b()
    reps = reps_for(time.perf_counter() - t0, budget)
    best_a = best_b = float("inf")
    for _ in range(ROUNDS):
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


@dataclass(frozen=True)
class LayerCase:
    """One layer timing: a MobileNetV1 layer shape at a batch size and a fraction of zeros."""

    kind: str  # "pointwise" (1x1) or "depthwise" (3x3, padding 1)
    dims: tuple[int, int, int]  # (Cin, Cout, H) pointwise; (C, H_in, stride) depthwise
    batch: int
    sparsity: float

    @property
    def shape(self) -> str:
        if self.kind == "pointwise":
            cin, cout, h = self.dims
            return f"{cin}->{cout} @{h}x{h}"
        c, h, stride = self.dims
        return f"dw{c} s{stride} @{h}x{h}"

    def build(self) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
        """(dense ``F.conv2d``, compressed sparse op) on the same pruned weight and input. The
        input and the dense weight depend on the shape and batch only (seeded from them), so the
        cases of one shape differ in their zeros only."""
        seed = zlib.crc32(repr((self.kind, self.dims, self.batch)).encode())  # stable across runs
        gen = torch.Generator().manual_seed(seed)
        if self.kind == "pointwise":
            cin, cout, h = self.dims
            x = torch.randn(self.batch, cin, h, h, generator=gen)
            w0 = torch.randn(cout, cin, 1, 1, generator=gen)
            b = torch.randn(cout, generator=gen)
            w = prune(w0, self.sparsity, gen)
            rp, ci, v = dense_to_csr(w)
            return (lambda: F.conv2d(x, w, b),
                    lambda: torch.ops.sparseopt.csr_pointwise_conv2d(x, rp, ci, v, b))
        c, h, stride = self.dims
        x = torch.randn(self.batch, c, h, h, generator=gen)
        w0 = torch.randn(c, 1, 3, 3, generator=gen)
        b = torch.randn(c, generator=gen)
        w = prune(w0, self.sparsity, gen)
        tp, ti, v = dense_to_taps(w)
        return (lambda: F.conv2d(x, w, b, stride=stride, padding=1, groups=c),
                lambda: torch.ops.sparseopt.sparse_depthwise_conv2d(
                    x, tp, ti, v, b, [3, 3], [stride, stride], [1, 1]))


def layer_cases(sparsities: list[float], batches: list[int]) -> list[LayerCase]:
    """Every distinct pointwise shape, then every depthwise shape, per batch and sparsity."""
    pw_shapes, dw_shapes = layer_shapes()
    return [LayerCase(kind, dims, n, s) for n in batches
            for kind, shapes in (("pointwise", pw_shapes), ("depthwise", dw_shapes))
            for dims in shapes for s in sparsities]


def max_abs_err(dense: Callable[[], torch.Tensor], sparse: Callable[[], torch.Tensor]) -> float:
    return (sparse() - dense()).abs().max().item()


def result_row(kind: str, shape: str, batch: int, sparsity: float, dense_t: float,
               sparse_t: float, err: float) -> dict:
    """One row of the results (conv.json), times in seconds per call."""
    return dict(kind=kind, shape=shape, batch=batch, sparsity=sparsity, dense_ms=dense_t * 1e3,
                sparse_ms=sparse_t * 1e3, speedup=dense_t / sparse_t, max_abs_err=err)


def bench_layers(sparsities: list[float], batches: list[int], budget: float) -> list[dict]:
    rows = []
    with torch.no_grad():
        for case in layer_cases(sparsities, batches):
            dense, sparse = case.build()
            dense_t, sparse_t = timeit_pair(dense, sparse, budget)
            rows.append(result_row(case.kind, case.shape, case.batch, case.sparsity, dense_t,
                                   sparse_t, max_abs_err(dense, sparse)))
            print(_fmt(rows[-1]), flush=True)
    return rows


@torch.no_grad()
def network_models(sparsity: float) -> dict[str, tuple[nn.Module, nn.Module]]:
    """Per variant (:data:`NETWORK_VARIANTS`), the dense MobileNetV1 1.0/224 with ``sparsity``
    zeros in every 1x1 and depthwise weight and its ``sparsify`` + ``compress`` twin."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    dense = mobilenet_v1(num_classes=1000, width_mult=1.0, input_size=224).eval()
    for m in dense.modules():
        if isinstance(m, nn.Conv2d) and (m.kernel_size == (1, 1) or m.groups > 1):
            m.weight.copy_(prune(m.weight, sparsity, gen))
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5, generator=gen)
    out = {}
    for variant in NETWORK_VARIANTS:
        d = copy.deepcopy(dense)
        if variant == "BN folded":  # the same inference transform on both sides
            sparseopt.nn.fold_batchnorm(d)
        out[variant] = (d, sparseopt.nn.compress(sparseopt.nn.sparsify(copy.deepcopy(d)).eval()))
    return out


def network_input(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(2 + batch))


def network_shape(variant: str) -> str:
    return f"MobileNetV1 1.0 224, {variant}"


def bench_network(batches: list[int], sparsity: float, budget: float) -> list[dict]:
    rows = []
    with torch.no_grad():
        for variant, (d, sp) in network_models(sparsity).items():
            for n in batches:
                x = network_input(n)
                dt, st = timeit_pair(lambda: d(x), lambda: sp(x), budget * NETWORK_BUDGET_FACTOR)
                rows.append(result_row("network", network_shape(variant), n, sparsity, dt, st,
                                       max_abs_err(lambda: d(x), lambda: sp(x))))
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


def plot(rows: list[dict], path: str, info: dict) -> None:
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
    fig.suptitle(f"sparseopt sparse conv vs dense, {info['cpu']}, {info['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def header(info: dict) -> str:
    return f"# bench_conv: {info['cpu']}, {info['threads']} threads, torch {info['torch']}, {info['date']}"


def render(info: dict, rows: list[dict], thresholds: dict[str, dict]) -> str:
    """conv.md: the per-layer speed-ups by zero fraction, the whole network, the threshold data."""
    lines = [header(info)]
    levels = sorted({r["sparsity"] for r in rows if r["kind"] != "network"})
    lines.append("\nspeed-up of the sparse kernel over dense F.conv2d (dense time in ms):")
    lines.append("| kind | shape | batch | dense ms | " + " | ".join(f"{s * 100:.0f}%" for s in levels) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(levels))
    seen = dict.fromkeys((r["kind"], r["shape"], r["batch"]) for r in rows if r["kind"] != "network")
    for kind, shape, n in seen:
        rs = {r["sparsity"]: r for r in rows if (r["kind"], r["shape"], r["batch"]) == (kind, shape, n)}
        cells = " | ".join(f"{rs[s]['speedup']:.2f}x" if s in rs else "" for s in levels)
        lines.append(f"| {kind} | {shape} | {n} | {next(iter(rs.values()))['dense_ms']:.3f} | {cells} |")
    lines.append("\nwhole network:")
    lines.append("| model | batch | zeros | dense ms | sparse ms | speed-up |")
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "network":
            lines.append(f"| {r['shape']} | {r['batch']} | {r['sparsity'] * 100:.0f}% | "
                         f"{r['dense_ms']:.2f} | {r['sparse_ms']:.2f} | {r['speedup']:.2f}x |")
    lines.append("\nsparse vs dense per zero fraction (for the dense-fallback threshold):")
    lines.append("| kind | zeros | geomean speed-up | worst | cases sparse loses |")
    lines.append("|---|---|---|---|---|")
    for kind, t in thresholds.items():
        for s, v in t["per_sparsity"].items():
            lines.append(f"| {kind} | {s * 100:.0f}% | {v['geomean']:.2f}x | {v['worst']:.2f}x | "
                         f"{v['losing']}/{v['cases']} |")
    for kind, t in thresholds.items():
        lines.append(f"{kind}: sparse wins on every case from {t['all_win_from_sparsity']} zeros; "
                     f"current DENSE_FALLBACK_DENSITY = {sparseopt.nn.DENSE_FALLBACK_DENSITY[kind]}")
    return "\n".join(lines) + "\n"


def write_outputs(out: str, info: dict, rows: list[dict]) -> str:
    """conv.json, conv.md and conv_speedup.png in ``out``; returns conv.md's text."""
    os.makedirs(out, exist_ok=True)
    thresholds = fallback_thresholds(rows)
    with open(os.path.join(out, "conv.json"), "w") as f:
        json.dump(dict(info=info, rows=rows, thresholds=thresholds), f, indent=1, default=str)
    plot(rows, os.path.join(out, "conv_speedup.png"), info)
    report = render(info, rows, thresholds)
    with open(os.path.join(out, "conv.md"), "w") as f:
        f.write(report)
    return report


def from_pytest_json(data: dict) -> tuple[dict, list[dict]] | None:
    """(info, rows) of the convolution cases of a pytest-benchmark JSON (benchmarks/
    test_bench_conv.py), as :func:`main` makes them; None if it holds none. Each side's time is
    its best round, as in :func:`timeit_pair`; a case needs both sides in the file."""
    entries = [b for b in data["benchmarks"] if b["extra_info"].get("suite") == "conv"]
    if not entries:
        return None
    sides: dict[tuple, dict[str, dict]] = {}
    for b in sorted(entries, key=lambda b: b["extra_info"]["index"]):
        x = b["extra_info"]
        sides.setdefault((x["kind"], x["shape"], x["batch"], x["sparsity"]), {})[x["impl"]] = b
    rows = []
    for (kind, shape, batch, sparsity), pair in sides.items():
        if set(pair) == {"dense", "sparse"}:
            rows.append(result_row(kind, shape, batch, sparsity, pair["dense"]["stats"]["min"],
                                   pair["sparse"]["stats"]["min"],
                                   pair["sparse"]["extra_info"]["max_abs_err"]))
    env = data["machine_info"].get("sparseopt_bench", {})
    info = dict(date=run_date(data), cpu=env.get("cpu", "?"),
                threads=env.get("threads", "?"), torch=env.get("torch", "?"),
                sparseopt=env.get("sparseopt", "?"), backend=env.get("backend_info", {}),
                source="pytest-benchmark")
    return info, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="0%% and 90%% zeros, batch 1, short timings")
    ap.add_argument("--out", default="bench_out", help="output folder (default bench_out)")
    ap.add_argument("--device", default="cpu",
                    help="cpu (the sparse layers' inference kernels are measured on the CPU; "
                         "any other device is skipped)")
    args = ap.parse_args()
    if args.device != "cpu":
        print(f"bench_conv: measures CPU inference; skipped for --device {args.device}")
        return
    cfg = settings(args.quick)
    info = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpu=cpu_name(),
                threads=torch.get_num_threads(), torch=torch.__version__,
                sparseopt=sparseopt.__version__, backend=sparseopt.backend_info())
    print(header(info))
    print("| kind | shape | batch | zeros | dense ms | sparse ms | speed-up |")  # rows live, not
    print("|---|---|---|---|---|---|---|")  # in conv.md (its tables below hold the same numbers)
    rows = bench_layers(cfg.sparsities, cfg.batches, cfg.budget)
    rows += bench_network(cfg.net_batches, NETWORK_SPARSITY, cfg.budget)
    print(write_outputs(args.out, info, rows).split("\n", 1)[1])  # the header is printed above
    print(f"wrote {args.out}/conv.json, {args.out}/conv.md and {args.out}/conv_speedup.png")


if __name__ == "__main__":
    main()

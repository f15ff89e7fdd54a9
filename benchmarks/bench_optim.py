"""One optimizer step on a ResNet18-CIFAR-shaped parameter set (62 tensors, 11.2M params).

Every row times one ``step()`` (gradients precomputed, no forward/backward) and reports the
time, the effective bandwidth (bytes the rule must read and write per element / time), the
ratio of that bandwidth to an in-place stream-add (``a += b``) measured in the same run, and
speed-ups over the naive per-parameter loop of the same rule and over torch's fused optimizer
for it (where the table has one). With ``--rounds R`` the whole table is measured R times, rows
interleaved, and each figure is the median over the rounds.

Rows come from ``benchmarks/optim_rows_*.py``: each exposes ``ROWS``, a list of
``(name, factory, bytes_per_element)`` where ``factory(params)`` gets fp32 parameters whose
``.grad`` is set and returns a zero-argument callable doing one step. Names are
``"<Rule>: <variant>"``; the variant ``naive loop`` is the speed-up baseline of its rule.
Rows in another dtype wrap their factory in :func:`in_dtype` (bytes per element are then those
of that dtype).

    python benchmarks/bench_optim.py [--quick] [--rounds R] [--device cpu|cuda] [--out bench_out]

The same rows run under pytest-benchmark (benchmarks/test_bench_optim.py, ``make bench``);
benchmarks/write_results.py renders this table from that run's JSON (:func:`from_pytest_json`).
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
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


@functools.lru_cache(maxsize=1)
def _initial_values(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    # Drawn once per seed: every row starts from copies (drawing 22M normals took longer than
    # the quick run's timed steps of a fused row).
    gen = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(shape, generator=gen).mul_(0.05),
                  torch.randn(shape, generator=gen).mul_(1e-3))
                 for shape in resnet18_cifar_shapes())


def make_params(device: str, seed: int = 0) -> list[torch.Tensor]:
    """Fresh fp32 parameters of the ResNet18-CIFAR set on ``device``, their ``.grad`` set (the
    same values for every call with the same seed)."""
    params = []
    for w, g in _initial_values(seed):
        p = w.to(device, copy=True).requires_grad_()
        p.grad = g.to(device, copy=True)
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


# Steps timed per row (the median is reported) and untimed warm-up steps. The naive loops are
# 10-100x slower than the fused rows: fewer of their steps keep a run to a few minutes.
REPS, NAIVE_REPS, WARMUP, NAIVE_WARMUP = 20, 5, 3, 1
QUICK_REPS, QUICK_NAIVE_REPS = 5, 2
STREAM_ADD_BYTES = 12  # a += b reads a and b and writes a: 12 bytes per fp32 element


def load_rows() -> list[tuple[str, Callable, int]]:
    rows = []
    for path in sorted(HERE.glob("optim_rows_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        rows += module.ROWS
    return rows


def default_reps(quick: bool) -> tuple[int, int]:
    """(steps timed per row, per naive-loop row)."""
    return (QUICK_REPS, QUICK_NAIVE_REPS) if quick else (REPS, NAIVE_REPS)


def timing_plan(name: str, reps: int, naive_reps: int, quick: bool = False) -> tuple[int, int]:
    """(timed steps, warm-up steps) of the row ``name``. The naive loops take ``naive_reps``
    steps; in a quick run so do the pure-PyTorch reference rows (as slow as the naive loops, and
    most of a quick run's time otherwise)."""
    slow = "naive" in name or (quick and "reference" in name)
    return (naive_reps, NAIVE_WARMUP) if slow else (reps, WARMUP)


def rule_of(name: str) -> str:
    return name.split(":")[0]


def baselines(name: str, names: Iterable[str]) -> dict[str, str]:
    """The rows that ``name``'s speed is compared with, among ``names``: ``vs_naive``, the
    per-parameter loop of the same rule, and ``vs_torch_fused``, torch's fused optimizer for
    the same rule (the ``torch ... fused`` variant). Only those the table has."""
    out = {}
    for other in names:
        if rule_of(other) != rule_of(name):
            continue
        variant = other.split(":", 1)[1].strip()
        if variant == "naive loop":
            out["vs_naive"] = other
        elif variant.startswith("torch") and "fused" in variant.split():
            out["vs_torch_fused"] = other
    return out


def add_ratios(results: list[dict]) -> None:
    """Each row's speed-ups over its baselines (:func:`baselines`; None where there is none)."""
    ms = {r["row"]: r["ms"] for r in results}
    for r in results:
        base = baselines(r["row"], ms)
        for key in ("vs_naive", "vs_torch_fused"):
            r[key] = ms[base[key]] / r["ms"] if key in base else None


def figures(nbytes: int, numel: int, seconds: float, stream_add_gb_s: float) -> dict[str, float]:
    """A row's figures from its time per step: bytes the rule must move per element x elements /
    time, and that as a fraction of the stream-add bandwidth measured next to it."""
    gbs = nbytes * numel / seconds / 1e9
    return dict(ms=1e3 * seconds, gb_s=gbs, stream_add_gb_s=stream_add_gb_s,
                of_stream_add=gbs / stream_add_gb_s)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], device: str, reps: int, warmup: int = 3) -> float:
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


def stream_add_op(device: str, numel: int) -> Callable[[], object]:
    """``a += b`` over ``numel`` fp32 elements (:data:`STREAM_ADD_BYTES` per element)."""
    a = torch.randn(numel, device=device)
    b = torch.randn(numel, device=device)
    return lambda: a.add_(b)


def stream_add(device: str, numel: int, reps: int) -> float:
    """GB/s of ``a += b`` over ``numel`` fp32 elements."""
    t = time_fn(stream_add_op(device, numel), device, reps)
    return STREAM_ADD_BYTES * numel / t / 1e9


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def render(meta: dict, results: list[dict]) -> str:
    """The markdown table (bench_out/optim_<device>.md)."""
    samples = meta["stream_add_samples_gb_s"]
    lines = [
        f"ResNet18-CIFAR parameter set: {meta['tensors']} tensors, {meta['numel'] / 1e6:.2f}M fp32 "
        f"params, device {meta['device']} ({meta['device_name']}), {meta['threads']} threads, "
        f"torch {meta['torch']}; stream-add a += b: median {meta['stream_add_gb_s']:.1f} GB/s "
        f"(range {min(samples):.0f}-{max(samples):.0f}; each row is compared with the "
        f"stream-adds measured next to it; medians over {meta['rounds']} interleaved round(s))",
        "",
        "| row | ms/step | GB/s | stream-add GB/s (adjacent) | of stream-add | vs naive loop "
        "| vs torch fused |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vs = {k: f"{r[k]:.1f}x" if r.get(k) else "" for k in ("vs_naive", "vs_torch_fused")}
        lines.append(f"| {r['row']} | {r['ms']:.2f} | {r['gb_s']:.1f} | "
                     f"{r['stream_add_gb_s']:.1f} | {r['of_stream_add']:.2f} | {vs['vs_naive']} | "
                     f"{vs['vs_torch_fused']} |")
    return "\n".join(lines)


def write_outputs(out: Path, meta: dict, results: list[dict]) -> Path:
    """bench_out/optim_<device>.json, .csv and .md; returns their common stem."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"optim_{meta['device'].split(':')[0]}"
    stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=results), indent=2))
    stem.with_suffix(".md").write_text(render(meta, results) + "\n")
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]) if results else ["row"])
        w.writeheader()
        w.writerows(results)
    return stem


def from_pytest_json(data: dict) -> tuple[dict, list[dict]] | None:
    """(meta, results) of the optimizer rows of a pytest-benchmark JSON (``pytest benchmarks
    --benchmark-json``; rows of benchmarks/test_bench_optim.py), as :func:`main` makes them;
    None if it holds none. A row's time is the median of its timed steps."""
    entries = [b for b in data["benchmarks"] if b["extra_info"].get("suite") == "optim"]
    if not entries:
        return None
    entries.sort(key=lambda b: b["extra_info"]["index"])  # run with baselines first: table order
    # The reference bandwidth: the stream-add benchmark and the samples taken next to each row.
    samples = [b["extra_info"]["gb_s"] for b in data["benchmarks"]
               if b["extra_info"].get("suite") == "stream-add"]
    results = []
    for b in entries:
        x = b["extra_info"]
        samples += [x["stream_add_before_gb_s"], x["stream_add_after_gb_s"]]
        results.append(dict(row=x["row"], bytes_per_element=x["bytes_per_element"], rounds=1,
                            **figures(x["bytes_per_element"], x["numel"], b["stats"]["median"],
                                      x["stream_add_gb_s"])))
    add_ratios(results)
    env = data["machine_info"].get("sparseopt_bench", {})
    x = entries[0]["extra_info"]
    meta = dict(device=x["device"], device_name=env.get("device_name", "?"),
                threads=env.get("threads", "?"), torch=env.get("torch", "?"),
                sparseopt=env.get("sparseopt", "?"), backends=env.get("backends", []),
                numel=x["numel"], tensors=x["tensors"],
                stream_add_gb_s=statistics.median(samples), stream_add_samples_gb_s=samples,
                rounds=1, date=data.get("datetime"), source="pytest-benchmark")
    return meta, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument("--naive-reps", type=int, default=NAIVE_REPS)
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_REPS} steps per row, {QUICK_NAIVE_REPS} for the naive loops and "
                         "the reference rows")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure the whole table this many times, rows interleaved; medians")
    ap.add_argument("--only", default="", help="comma-separated substrings of row names")
    ap.add_argument("--out", default="bench_out")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.naive_reps = default_reps(quick=True)
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
            reps, warmup = timing_plan(name, args.reps, args.naive_reps, args.quick)
            t = time_fn(step, args.device, reps, warmup)
            del fresh, step
            bw_samples.append(stream_add(args.device, numel, args.reps))
            per_round.setdefault(name, []).append(
                figures(nbytes, numel, t, (bw_samples[-2] + bw_samples[-1]) / 2))
    results = []
    for name, _, nbytes in rows:
        if name not in per_round:
            continue
        rounds = per_round[name]
        r = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
        results.append(dict(row=name, bytes_per_element=nbytes, rounds=len(rounds), **r))
    add_ratios(results)

    meta = dict(
        device=args.device,
        device_name=device_name(args.device),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        sparseopt=sparseopt.__version__,
        backends=sparseopt.backend_info()["backends"],
        numel=numel,
        tensors=len(params),
        stream_add_gb_s=statistics.median(bw_samples),
        stream_add_samples_gb_s=bw_samples,
        rounds=args.rounds,
    )
    print(render(meta, results))
    stem = write_outputs(Path(args.out), meta, results)
    print(f"\nwrote {stem}.json, .csv and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    raise SystemExit(main())

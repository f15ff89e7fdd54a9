"""``python -m sparseopt.demo``: the optimizers compared on scikit-learn's digits.

Trains the same small convnet with each optimizer (same seed, data order and budget), prints a
table in the spirit of the iRDA paper's Table 1 (accuracy, sparsity, l1 weight, train time, time
per optimizer step) and writes ``results.json``, ``report.md`` and plots to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import backend_info, sparsity_report
from .data import load_digits
from .runs import OPTIMIZERS, Run, run_one

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input: reported as one message, exit code 2, no traceback."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m sparseopt.demo",
        description="Train a small convnet on the digits data with each sparseopt optimizer "
        "and compare accuracy, sparsity and speed.",
    )
    ap.add_argument("--optimizers", default="all",
                    help=f"comma-separated subset of: {', '.join(OPTIMIZERS)} (default: all)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs per run (default 20, 16 with --quick)")
    ap.add_argument("--quick", action="store_true", help="a shorter run (under 2 minutes)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return ap.parse_args(argv)


def validate(args: argparse.Namespace) -> list[str]:
    names = list(OPTIMIZERS) if args.optimizers == "all" else [
        n.strip() for n in args.optimizers.split(",") if n.strip()
    ]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown or not names:
        raise UsageError(
            f"unknown optimizer(s) {unknown or args.optimizers!r}; choose from: "
            f"{', '.join(OPTIMIZERS)}"
        )
    if args.epochs is None:
        args.epochs = 16 if args.quick else 20
    if not 1 <= args.epochs <= 1000:
        raise UsageError(f"--epochs must be between 1 and 1000, got {args.epochs}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA device is available")
    if args.device not in ("cpu",) and not args.device.startswith("cuda"):
        raise UsageError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write to the output folder {str(out)!r}: {exc.strerror}") from None
    return names


def table(runs: list[Run]) -> str:
    lines = [
        "| optimizer | test acc. | sparsity | l1 weight | train time (s) | step (ms)* "
        "| inference dense / sparse (ms) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.label} | {r.result.accuracy:.2%} | {r.result.sparsity:.2%} | {r.l1} | "
            f"{r.result.train_time_s:.1f} | {r.result.step_time_ms:.3f} | "
            f"{r.inference['dense_ms']:.2f} / {r.inference['sparse_ms']:.2f} | "
            f"{r.inference['speedup']:.2f}x |"
        )
    lines.append("")
    lines.append("*time of `optimizer.step()` per batch (AdaHessian: with its backward and "
                 "Hessian-vector product). Inference: the 450 test images in one batch, best of "
                 "30 (dense and compressed copies timed alternately), with the depthwise and pointwise layers dense vs compressed "
                 "(`sparseopt.nn.compress`).")
    return "\n".join(lines)


def plots(runs: list[Run], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        epochs = [h["epoch"] for h in r.result.history]
        axes[0].plot(epochs, [h["accuracy"] for h in r.result.history], label=r.label)
        axes[1].plot(epochs, [h["sparsity"] for h in r.result.history], label=r.label)
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title="Accuracy")
    axes[1].set(xlabel="epoch", ylabel="fraction of exact zeros", title="Sparsity (l1-covered)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    written.append("curves.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    layers = [row["name"] for row in runs[0].layers]
    width = 0.8 / len(runs)
    for k, r in enumerate(runs):
        xs = [i + k * width for i in range(len(layers))]
        ax.bar(xs, [row["sparsity"] for row in r.layers], width, label=r.label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))], layers, rotation=20)
    ax.set(ylabel="fraction of exact zeros", title="Per-layer sparsity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "layer_sparsity.png", dpi=110)
    plt.close(fig)
    written.append("layer_sparsity.png")
    return written


def main(argv: list[str] | None = None) -> int:
    # AdaHessian's backward(create_graph=True) warns about a reference cycle that the optimizer
    # breaks itself (it detaches the gradients after each step).
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    args = parse_args(argv)
    try:
        names = validate(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = load_digits(seed=args.seed).to(args.device)
    print(f"sparseopt demo: digits {len(data.y_train)} train / {len(data.y_test)} test, "
          f"{args.epochs} epochs, device {args.device}, backends {backend_info()['backends']}")
    runs = []
    start = time.perf_counter()
    for name in names:
        runs.append(run_one(name, data, args.epochs, args.seed, args.device,
                            progress=not args.no_progress))
    elapsed = time.perf_counter() - start
    text = table(runs)
    print()
    print(text)
    meta: dict[str, Any] = dict(
        epochs=args.epochs, seed=args.seed, device=args.device, threads=torch.get_num_threads(),
        torch=torch.__version__, platform=platform.platform(), backends=backend_info(),
        total_time_s=elapsed,
    )
    results = dict(meta=meta, runs=[r.to_json() for r in runs])
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    images = [] if args.no_plots else plots(runs, out)
    report = [
        "# sparseopt demo: optimizers on the digits data",
        "",
        f"{args.epochs} epochs, batch 32, seed {args.seed}, device {args.device}, "
        f"{meta['threads']} threads, torch {meta['torch']}; total {elapsed:.0f} s.",
        "",
        text,
        "",
    ]
    report += [f"![{img}]({img})" for img in images]
    best = max((r for r in runs if r.l1 != "-"), key=lambda r: r.result.sparsity, default=None)
    if best is not None:
        report += ["", f"## Per-layer sparsity of {best.label}", "",
                   sparsity_report(best.model).to_markdown()]
    (out / "report.md").write_text("\n".join(report) + "\n")
    print(f"\nwrote {out / 'results.json'}, {out / 'report.md'}"
          + (f" and {', '.join(images)}" if images else "") + f" ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    raise SystemExit(main())

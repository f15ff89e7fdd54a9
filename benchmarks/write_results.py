"""Render a pytest-benchmark run of benchmarks/ as the benchmark scripts' own reports.

    pytest benchmarks --benchmark-only --benchmark-json bench_out/benchmarks.json
    python benchmarks/write_results.py bench_out/benchmarks.json [--out bench_out]

Each script turns its part of the JSON into its own files, with its own writer:
bench_optim.py -> optim_<device>.md/.json/.csv, bench_conv.py -> conv.md/.json and
conv_speedup.png, bench_inference.py -> inference.md/.json. All the tables are joined into
``<out>/summary.md``. These are the tables of benchmarks/RESULTS*.md; copy the figures there.
A file saved by ``--benchmark-autosave`` (.benchmarks/) works too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts, run from anywhere

import bench_conv  # noqa: E402
import bench_inference  # noqa: E402
import bench_optim  # noqa: E402


def load(path: Path) -> dict:
    """The pytest-benchmark JSON at ``path``; ValueError if it is not one."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) \
            or "machine_info" not in data:
        raise ValueError(f"{path} is not a pytest-benchmark JSON (no 'benchmarks' list and "
                         "'machine_info'; write one with pytest benchmarks --benchmark-json FILE)")
    return data


def write_all(data: dict, out: Path) -> list[Path]:
    """Every report the JSON has data for, written into ``out``; returns the markdown files."""
    written = []
    optim = bench_optim.from_pytest_json(data)
    if optim is not None:
        written.append(bench_optim.write_outputs(out, *optim).with_suffix(".md"))
    conv = bench_conv.from_pytest_json(data)
    if conv is not None:
        bench_conv.write_outputs(str(out), *conv)
        written.append(out / "conv.md")
    inference = bench_inference.from_pytest_json(data)
    if inference is not None:
        bench_inference.write_outputs(str(out), *inference)
        written.append(out / "inference.md")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", type=Path, help="pytest-benchmark JSON (--benchmark-json FILE)")
    ap.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder")
    args = ap.parse_args(argv)
    try:
        data = load(args.json)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = write_all(data, args.out)
    if not written:
        print(f"error: {args.json} holds no sparseopt benchmark (tests of benchmarks/test_bench_*"
              f".py); {len(data['benchmarks'])} other benchmark(s)", file=sys.stderr)
        return 1
    summary = "\n\n".join(p.read_text().rstrip("\n") for p in written) + "\n"
    (args.out / "summary.md").write_text(summary)
    print(summary)
    print(f"wrote {', '.join(str(p) for p in written)} and {args.out / 'summary.md'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

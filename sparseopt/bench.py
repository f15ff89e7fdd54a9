"""``python -m sparseopt.bench``: run every microbenchmark and collect one report.

Runs each ``benchmarks/bench_*.py`` of a source checkout (optimizer steps, sparse convolutions)
with the same options, then joins their markdown tables into ``<out>/summary.md`` and their JSON
into ``<out>/summary.json``. The benchmarks are scripts next to the package, not installed with
it: run this from a checkout (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sparseopt.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (optim, conv)")
    args = ap.parse_args(argv)
    scripts = sorted(BENCH_DIR.glob("bench_*.py")) if BENCH_DIR.is_dir() else []
    if not scripts:
        print(f"error: no benchmarks found in {BENCH_DIR}; run from a source checkout of "
              "sparseopt", file=sys.stderr)
        return 2
    wanted = {s for s in args.only.split(",") if s}
    unknown = wanted - {s.stem.removeprefix("bench_") for s in scripts}
    if unknown:
        print(f"error: unknown benchmark(s) {sorted(unknown)}; available: "
              f"{[s.stem.removeprefix('bench_') for s in scripts]}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()  # the scripts run in the checkout: give them an absolute path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: cannot create {str(out)!r}: {exc.strerror}", file=sys.stderr)
        return 2
    before = {p: p.stat().st_mtime for p in out.glob("*")}
    failed = []
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        cmd = [sys.executable, str(script), "--device", args.device, "--out", str(out)]
        if args.quick:
            cmd.append("--quick")
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
    fresh = [p for p in sorted(out.glob("*")) if before.get(p) != p.stat().st_mtime]
    tables = [p.read_text() for p in fresh if p.suffix == ".md" and p.name != "summary.md"]
    summary = {p.stem: json.loads(p.read_text()) for p in fresh
               if p.suffix == ".json" and p.name != "summary.json"}
    (out / "summary.md").write_text("\n\n".join(tables) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'summary.md'} and {out / 'summary.json'}")
    if failed:
        print(f"error: benchmark(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

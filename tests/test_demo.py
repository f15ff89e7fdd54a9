"""The main job: ``python -m sparseopt.demo`` runs, writes its report, and tells the paper's story."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run_demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparseopt.demo", *args], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"))


def test_quick_demo_writes_the_report_and_irda_wins_on_sparsity(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_demo("--quick", "--optimizers", "sgd,proxsgd,irda", "--out", str(out),
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "| iRDA" in proc.stdout
    for name in ("results.json", "report.md", "curves.png", "layer_sparsity.png"):
        assert (out / name).stat().st_size > 0, name
    runs = {r["optimizer"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert runs["irda"]["l1"] == runs["proxsgd"]["l1"]
    assert runs["irda"]["sparsity"] > runs["proxsgd"]["sparsity"]
    assert runs["irda"]["accuracy"] >= 0.90
    assert len(runs["irda"]["history"]) == 16
    assert "Per-layer sparsity of iRDA" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--optimizers", "sgd,lbfgs"], "unknown optimizer(s) ['lbfgs']"),
        (["--epochs", "0"], "--epochs must be between 1 and 1000"),
        (["--out", "/proc/sparseopt-cannot-write-here"], "cannot write to the output folder"),
    ],
)
def test_bad_input_exits_2_with_one_message(args: list[str], message: str) -> None:
    proc = run_demo(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr

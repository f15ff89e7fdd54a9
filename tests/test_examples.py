"""The CIFAR-10 example on a tiny synthetic folder in CIFAR-10's python format: it trains,
checkpoints, resumes to the same result, and explains a missing dataset."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "cifar10_resnet18.py"
pytestmark = pytest.mark.slow


def write_fake_cifar(folder: Path, n_train: int = 48, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_trains_checkpoints_and_resumes_identically(tmp_path: Path) -> None:
    data = tmp_path / "cifar" / "cifar-10-batches-py"
    write_fake_cifar(data)
    common = ["--data", str(tmp_path / "cifar"), "--device", "cpu", "--batch", "16",
              "--epochs", "1", "--retrain-epochs", "1", "--limit-batches", "2", "--l1", "1e-3"]
    unbroken = tmp_path / "unbroken.pt"
    proc = run(*common, "--checkpoint", str(unbroken))
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2 (retraining)" in proc.stdout

    resumed = tmp_path / "resumed.pt"
    proc = run(*common[:-6], "--epochs", "1", "--retrain-epochs", "0", "--limit-batches", "2",
               "--l1", "1e-3", "--checkpoint", str(resumed))
    assert proc.returncode == 0, proc.stderr
    proc = run(*common, "--checkpoint", str(resumed), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    a = torch.load(unbroken, weights_only=False)["model"]
    b = torch.load(resumed, weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_amp_runs_on_cpu(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path / "c")
    proc = run("--data", str(tmp_path / "c"), "--device", "cpu", "--batch", "16", "--epochs", "1",
               "--retrain-epochs", "0", "--limit-batches", "1", "--amp",
               "--checkpoint", str(tmp_path / "amp.pt"))
    assert proc.returncode == 0, proc.stderr


def test_missing_dataset_is_explained(tmp_path: Path) -> None:
    proc = run("--data", str(tmp_path / "nowhere"), "--device", "cpu")
    assert proc.returncode == 2
    assert "no CIFAR-10 python batches" in proc.stderr and "Traceback" not in proc.stderr

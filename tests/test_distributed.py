"""DDP and FSDP2 (gloo, 2 CPU processes via torchrun) give the parameters of a single process
that trains on the global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ddp_train.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="torch.distributed with gloo is not available"),
]


def _run(args: list[str], out: Path, world: int) -> dict[str, list[torch.Tensor]]:
    # --standalone: a local rendezvous on a free port (no clash with other runs).
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc_per_node", str(world)] if world > 1 else [sys.executable])
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    proc = subprocess.run(launcher + [str(EXAMPLE), *args, "--save", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return torch.load(out)


@pytest.mark.parametrize("wrap", ["ddp", "fsdp2"])
def test_two_processes_equal_one_process_on_the_global_batch(wrap: str, tmp_path) -> None:
    args = ["--optimizer", "all", "--steps", "20", "--dtype", "float64"]
    single = _run(args, tmp_path / "single.pt", world=1)
    ddp = _run(args + ["--wrap", wrap], tmp_path / "ddp.pt", world=2)
    assert set(single) == set(ddp) == {"proxsgd", "sqrt_t_proxsgd", "rda", "irda",
                                          "adamw_l1"}
    for name in single:
        for a, b in zip(single[name], ddp[name]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
        assert any((p == 0).any() for p in ddp[name]), name  # the l1 term made zeros

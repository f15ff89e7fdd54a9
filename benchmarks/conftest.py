"""The benchmark scripts' tables under pytest-benchmark (``make bench``)::

    pytest benchmarks --benchmark-only [--bench-quick] [--bench-device cuda] \\
        [--benchmark-json bench_out/benchmarks.json]
    python benchmarks/write_results.py bench_out/benchmarks.json   # the scripts' markdown tables

test_bench_optim.py times every optimizer-step row of bench_optim.py (optim_rows_*.py) and the
stream-add they are measured against; test_bench_conv.py bench_conv.py's layer and network cases,
dense and sparse; test_bench_inference.py bench_inference.py's engines. The tests take their
rows, settings and timing plans from the scripts; this file adds the options, the timer (which
synchronises CUDA) and the run's metadata in the JSON. A ratio to a baseline (``extra_info``)
needs the baseline's test in the same session: each table parametrizes its baselines first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the scripts import each other by name, as they do when run

try:
    from pytest_benchmark.fixture import BenchmarkFixture
except ImportError as exc:  # the hooks below are pytest-benchmark's: say what is missing
    raise ImportError("benchmarks/ runs under pytest-benchmark: pip install pytest-benchmark "
                      "(part of sparseopt's [test] extra)") from exc

import bench_conv  # noqa: E402
import bench_inference  # noqa: E402
import bench_optim  # noqa: E402

_LOAD_BEFORE = pytest.StashKey[str]()
_NOTES = pytest.StashKey[list]()

Timer = Callable[..., "float | None"]  # the `timed` fixture


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sparseopt", "sparseopt benchmarks (benchmarks/)")
    group.addoption("--bench-device", default="cpu",
                    help="device of the optimizer-step benchmarks: cpu (default), cuda, cuda:N. "
                         "The convolution and inference benchmarks measure CPU inference and "
                         "skip on another device")
    group.addoption("--bench-quick", action="store_true",
                    help="the scripts' --quick settings (fewer steps, zero fractions and batch "
                         "sizes; inference at batch 1 only): a couple of minutes on 2 cores")


def pytest_configure(config: pytest.Config) -> None:
    device = config.getoption("--bench-device")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise pytest.UsageError(f"--bench-device {device!r}: {exc}") from None
    if dev.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--bench-device {device!r}: cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--bench-device {device}: no CUDA device is available")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise pytest.UsageError(f"--bench-device {device}: there are "
                                f"{torch.cuda.device_count()} CUDA devices")
    config.stash[_LOAD_BEFORE] = bench_inference.load_average()
    config.stash[_NOTES] = []


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    # Stable facts only: pytest-benchmark warns when a compared run's machine_info differs (the
    # load average and the notes go into the run's own section, pytest_benchmark_update_json).
    import sparseopt

    device = config.getoption("--bench-device")
    machine_info["sparseopt_bench"] = dict(
        device=device, device_name=bench_optim.device_name(device), cpu=bench_conv.cpu_name(),
        simd=bench_inference.simd_flags(), cores=os.cpu_count(), threads=torch.get_num_threads(),
        torch=torch.__version__, sparseopt=sparseopt.__version__,
        backends=sparseopt.backend_info()["backends"], backend_info=sparseopt.backend_info())


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    output_json["sparseopt_bench"] = dict(
        quick=config.getoption("--bench-quick"), load_before=config.stash[_LOAD_BEFORE],
        load_after=bench_inference.load_average(), notes=config.stash[_NOTES])


@pytest.fixture(scope="session")
def bench_device(pytestconfig: pytest.Config) -> str:
    return pytestconfig.getoption("--bench-device")


@pytest.fixture(scope="session")
def bench_quick(pytestconfig: pytest.Config) -> bool:
    return pytestconfig.getoption("--bench-quick")


@pytest.fixture(scope="session")
def bench_notes(pytestconfig: pytest.Config) -> list[str]:
    """What the run could not measure and why (engines skipped); written into the JSON."""
    return pytestconfig.stash[_NOTES]


@pytest.fixture(scope="session")
def measured() -> dict[str, float]:
    """Seconds per call of what this session has timed so far, by key: the baselines that later
    tests' ratios are computed against."""
    return {}


@pytest.fixture
def timed(benchmark: BenchmarkFixture) -> Timer:
    """``timed(fn, device, rounds=, warmup=0, iterations=1, stat="median")``: ``fn`` timed by
    ``benchmark.pedantic``; returns seconds per call (``stat`` of the rounds), or None under
    ``--benchmark-disable`` (``fn`` then runs once, untimed). On CUDA every call is followed by
    ``torch.cuda.synchronize()``, inside the timed region, and queued work is waited for before
    the first call: the time is the kernels', not the launches'."""

    def run(fn: Callable[[], object], device: str, *, rounds: int, warmup: int = 0,
            iterations: int = 1, stat: str = "median") -> float | None:
        def synced() -> None:
            fn()
            torch.cuda.synchronize(device)

        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.synchronize(device)
        benchmark.pedantic(synced if cuda else fn, rounds=rounds, warmup_rounds=warmup, iterations=iterations)
        if benchmark.disabled or not benchmark.stats:
            return None
        return float(getattr(benchmark.stats.stats, stat))

    return run

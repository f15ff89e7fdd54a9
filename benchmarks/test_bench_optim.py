"""bench_optim.py under pytest-benchmark: one ``step()`` of every row of optim_rows_*.py on the
ResNet18-CIFAR parameter set (``--bench-device``), and the stream-add ``a += b`` they are
measured against.

Each row's ``extra_info`` holds bench_optim's figures (ms, GB/s, the mean of the stream-adds
measured just before and just after the row, the fraction of it) and the speed-ups over the
row's baselines, its rule's naive loop (``vs_naive``) and torch's fused optimizer
(``vs_torch_fused``, where the table has one; bench_optim.baselines). The baselines of a rule run
before its other rows, so the ratios come from the same session.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

import bench_optim

Timer = Callable[..., "float | None"]  # the `timed` fixture (conftest.py)

ROWS = bench_optim.load_rows()
NAMES = [name for name, _, _ in ROWS]
TENSORS = len(bench_optim.resnet18_cifar_shapes())
NUMEL = sum(math.prod(s) for s in bench_optim.resnet18_cifar_shapes())


def _run_order() -> list[int]:
    """Row indices, each rule's baselines before its other rows (rules in table order)."""
    first: dict[str, int] = {}
    for i, name in enumerate(NAMES):
        first.setdefault(bench_optim.rule_of(name), i)

    def key(i: int) -> tuple[int, bool, int]:
        name = NAMES[i]
        is_baseline = name in bench_optim.baselines(name, NAMES).values()
        return first[bench_optim.rule_of(name)], not is_baseline, i

    return sorted(range(len(ROWS)), key=key)


def row_id(name: str) -> str:
    """"Adam: torch fused" -> "Adam:torch_fused" (an id -k and the command line take)."""
    return name.replace(": ", ":").replace(" ", "_")


def test_stream_add(benchmark: BenchmarkFixture, timed: Timer, bench_device: str,
                    bench_quick: bool) -> None:
    benchmark.group = "optim: stream-add a += b"
    reps, _ = bench_optim.default_reps(bench_quick)
    seconds = timed(bench_optim.stream_add_op(bench_device, NUMEL), bench_device, rounds=reps,
                    warmup=bench_optim.WARMUP)
    if seconds is None:
        return
    benchmark.extra_info.update(
        suite="stream-add", device=bench_device, numel=NUMEL,
        bytes_per_element=bench_optim.STREAM_ADD_BYTES,
        gb_s=bench_optim.STREAM_ADD_BYTES * NUMEL / seconds / 1e9)


@pytest.mark.parametrize("index", _run_order(), ids=[row_id(NAMES[i]) for i in _run_order()])
def test_step(index: int, benchmark: BenchmarkFixture, timed: Timer, bench_device: str,
              bench_quick: bool, measured: dict[str, float]) -> None:
    name, factory, nbytes = ROWS[index]
    benchmark.group = f"optim: {bench_optim.rule_of(name)}"
    params = bench_optim.make_params(bench_device)
    try:
        step = factory(params)
    except (RuntimeError, ValueError) as exc:  # as bench_optim: e.g. no fused CPU Adam in torch
        pytest.skip(f"{name}: {exc}")
    reps, naive_reps = bench_optim.default_reps(bench_quick)
    steps, warmup = bench_optim.timing_plan(name, reps, naive_reps, bench_quick)
    # The memory bandwidth of a shared VM drifts: compare the row with the stream-adds measured
    # right next to it (bench_optim does the same).
    before = bench_optim.stream_add(bench_device, NUMEL, reps) if benchmark.enabled else None
    seconds = timed(step, bench_device, rounds=steps, warmup=warmup)
    if seconds is None or before is None:
        return
    after = bench_optim.stream_add(bench_device, NUMEL, reps)
    measured[f"optim:{name}"] = seconds
    ratios = {key: measured[f"optim:{base}"] / seconds
              for key, base in bench_optim.baselines(name, NAMES).items()
              if f"optim:{base}" in measured}
    benchmark.extra_info.update(
        suite="optim", index=index, row=name, device=bench_device, bytes_per_element=nbytes,
        numel=NUMEL, tensors=TENSORS, stream_add_before_gb_s=before, stream_add_after_gb_s=after,
        **bench_optim.figures(nbytes, NUMEL, seconds, (before + after) / 2), **ratios)

"""bench_inference.py under pytest-benchmark: the sparse MobileNetV1 (90% zeros) compressed by
sparseopt against the dense model in eager PyTorch, in ONNX Runtime (when importable) and in
DeepSparse (when its virtualenv exists; else skipped with bench_inference's reason), per batch
size, each engine on bench_inference.THREADS threads; and the compressed model's 1x1 layers alone.

Each engine's output is checked against the eager float32 model (bench_inference.RTOL) before it
is timed; a mismatch fails the test. Rounds of a calibrated number of forwards, the median
reported, as bench_inference. The baselines (eager, ONNX Runtime, DeepSparse) of a batch run
first; ``extra_info`` holds the speed-ups over those measured (``vs_<engine>``). CPU only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

import bench_inference as bi

Timer = Callable[..., "float | None"]  # the `timed` fixture (conftest.py)
# Baselines first: a ratio in extra_info needs its baseline measured earlier in the session.
RUN_ORDER = ("eager", "onnxruntime", "deepsparse", "sparseopt-kept", "sparseopt")
BatchEngines = tuple[torch.Tensor, torch.Tensor, dict[str, bi.Engine], float]


def bench_batches(quick: bool) -> list[int]:
    """bench_inference's batch sizes; with --bench-quick batch 1 only (its --quick adds batch 16,
    the slowest part of a quick run on 2 cores)."""
    return [1] if quick else bi.settings(quick=False).batches


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sizes = bench_batches(metafunc.config.getoption("--bench-quick"))
    if "engine_kind" in metafunc.fixturenames:
        params = [(n, kind) for n in sizes for kind in RUN_ORDER]
        metafunc.parametrize(("batch", "engine_kind"), params,
                             ids=[f"b{n}:{kind}" for n, kind in params])
    elif "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", sizes, ids=[f"b{n}" for n in sizes])


@pytest.fixture(scope="module")
def engine_set(bench_device: str, bench_notes: list[str]) -> Iterator[bi.EngineSet]:
    if bench_device != "cpu":
        pytest.skip(f"bench_inference measures CPU inference (--bench-device {bench_device})")
    threads = torch.get_num_threads()
    torch.set_num_threads(bi.THREADS)  # every engine on the same threads (bench_inference)
    try:
        with bi.EngineSet(bi.SPARSITY, bi.THREADS, bi.DEEPSPARSE_PYTHON) as engine_set:
            yield engine_set
            bench_notes.extend(n for n in engine_set.notes if n not in bench_notes)
    finally:
        torch.set_num_threads(threads)  # the other benchmarks run on torch's default


@pytest.fixture(scope="module")
def batch_engines(engine_set: bi.EngineSet) -> Callable[[int], BatchEngines]:
    """``get(n)``: (input, eager output, engines by kind, useful flops) at batch ``n``, built
    once per module."""
    cache: dict[int, BatchEngines] = {}

    def get(n: int) -> BatchEngines:
        if n not in cache:
            x, ref, engines = engine_set.for_batch(n)
            flops, _ = bi.useful_flops(engine_set.model, n)
            cache[n] = (x, ref, {e.kind: e for e in engines}, flops)
        return cache[n]

    return get


def test_engine(batch: int, engine_kind: str, engine_set: bi.EngineSet,
                batch_engines: Callable[[int], BatchEngines], benchmark: BenchmarkFixture,
                timed: Timer, bench_quick: bool, measured: dict[str, float]) -> None:
    _, ref, engines, flops = batch_engines(batch)
    if engine_kind not in engines:
        why = [n for n in engine_set.notes if engine_kind.lower() in n.lower()]
        pytest.skip(why[-1] if why else f"no {engine_kind} engine")
    e = engines[engine_kind]
    err = bi.rel_err(e.output, ref)
    problem = bi.mismatch(e, batch, err)
    assert problem is None, problem
    cfg = bi.settings(bench_quick)
    benchmark.group = f"inference: MobileNetV1 batch {batch}"
    # (under --benchmark-disable e.run runs once: no calibration)
    iterations = bi.reps_for(e, cfg.segment) if benchmark.enabled else 1
    seconds = timed(e.run, "cpu", rounds=cfg.rounds, iterations=iterations)
    if seconds is None:
        return
    measured[f"inference:{batch}:{engine_kind}"] = seconds
    ratios = {f"vs_{k}": measured[f"inference:{batch}:{k}"] / seconds for k in RUN_ORDER
              if k != engine_kind and f"inference:{batch}:{k}" in measured}
    benchmark.extra_info.update(
        suite="inference", kind="engine", engine_kind=engine_kind, engine=e.name, batch=batch,
        threads=bi.THREADS, sparsity=bi.SPARSITY, rounds=cfg.rounds, useful_flops=flops,
        rel_err=err, ms=seconds * 1e3, images_s=batch / seconds, gflops=flops / seconds / 1e9,
        **ratios)


def test_pointwise_layers(batch: int, batch_engines: Callable[[int], BatchEngines],
                          benchmark: BenchmarkFixture, timed: Timer, bench_quick: bool) -> None:
    """The compressed model's 1x1 layers, each called on its real input (useful GFLOP/s)."""
    x, _, engines, _ = batch_engines(batch)
    calls = bi.pointwise_calls(engines["sparseopt"].model, x)  # type: ignore[attr-defined]
    assert calls, "the compressed MobileNetV1 has no compressed 1x1 layer"

    def layers() -> None:
        for m, xi, _ in calls:
            m(xi)

    benchmark.group = f"inference: MobileNetV1 batch {batch}"
    with torch.no_grad():
        seconds = timed(layers, "cpu", rounds=bi.pointwise_rounds(bi.settings(bench_quick).rounds),
                        iterations=bi.POINTWISE_CALLS)
    if seconds is None:
        return
    flops = sum(f for _, _, f in calls)
    benchmark.extra_info.update(suite="inference", kind="pointwise layers", batch=batch,
                                threads=bi.THREADS, pointwise_flops=flops,
                                gflops=flops / seconds / 1e9)

"""bench_conv.py under pytest-benchmark: every layer case (each distinct MobileNetV1 1x1 and
depthwise shape at bench_conv's zero fractions and batch sizes) and the whole MobileNetV1, each
timed dense (``F.conv2d`` / the ``nn.Conv2d`` model) and sparse (the compressed op / model).

As in bench_conv: 8 rounds of a calibrated number of calls, the best round reported (``min``);
the dense side of a case runs first and the sparse side's ``extra_info`` holds the speed-up over
it and the largest difference of their outputs. CPU only (skipped for another --bench-device).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

import bench_conv
from bench_conv import LayerCase

Timer = Callable[..., "float | None"]  # the `timed` fixture (conftest.py)
IMPLS = ("dense", "sparse")  # dense first: the sparse side's speed-up is computed against it


def _case_id(kind: str, shape: str, batch: int, sparsity: float) -> str:
    """"pointwise", "32->64 @112x112", 1, 0.9 -> "pointwise:32to64_112x112:b1:z90"."""
    shape = shape.replace("->", "to").replace(" @", "_").replace(" ", "")
    return f"{kind}:{shape}:b{batch}:z{sparsity * 100:.0f}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    cfg = bench_conv.settings(metafunc.config.getoption("--bench-quick"))
    cases = bench_conv.layer_cases(cfg.sparsities, cfg.batches)
    if "layer_case" in metafunc.fixturenames:
        params = [(2 * i + j, case, impl) for i, case in enumerate(cases)
                  for j, impl in enumerate(IMPLS)]
        metafunc.parametrize(
            ("index", "layer_case", "impl"), params,
            ids=[f"{_case_id(c.kind, c.shape, c.batch, c.sparsity)}:{impl}" for _, c, impl in params])
    if "variant" in metafunc.fixturenames:
        start = 2 * len(cases)  # after the layers, in the results' order
        params = [(v, n, impl) for v in bench_conv.NETWORK_VARIANTS for n in cfg.net_batches
                  for impl in IMPLS]
        metafunc.parametrize(
            ("index", "variant", "batch", "impl"),
            [(start + i, *p) for i, p in enumerate(params)],
            ids=[f"{v.replace(' ', '_')}:b{n}:{impl}" for v, n, impl in params])


@pytest.fixture(scope="module", autouse=True)
def _cpu_only(bench_device: str) -> None:
    if bench_device != "cpu":
        pytest.skip(f"bench_conv measures CPU inference (--bench-device {bench_device})")


@pytest.fixture(scope="module")
def networks() -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    return bench_conv.network_models(bench_conv.NETWORK_SPARSITY)


def _time_side(benchmark: BenchmarkFixture, timed: Timer, measured: dict[str, float],
               fn: Callable[[], torch.Tensor], budget: float, case: dict,
               err: Callable[[], float]) -> None:
    """Time one side of a case as bench_conv does and record it (``case``: its extra_info)."""
    key = f"conv:{_case_id(case['kind'], case['shape'], case['batch'], case['sparsity'])}"
    benchmark.group = (f"conv: {case['kind']} {case['shape']}, batch {case['batch']}, "
                       f"{case['sparsity'] * 100:.0f}% zeros")
    with torch.no_grad():
        # (under --benchmark-disable fn runs once: no calibration)
        iterations = bench_conv.calibrate(fn, budget) if benchmark.enabled else 1
        seconds = timed(fn, "cpu", rounds=bench_conv.ROUNDS, iterations=iterations, stat="min")
        if seconds is None:
            return
        extra = dict(suite="conv", **case, ms=seconds * 1e3)
        if case["impl"] == "sparse":
            extra["max_abs_err"] = err()
            if f"{key}:dense" in measured:
                extra["speedup"] = measured[f"{key}:dense"] / seconds
    measured[f"{key}:{case['impl']}"] = seconds
    benchmark.extra_info.update(extra)


def test_layer(index: int, layer_case: LayerCase, impl: str, benchmark: BenchmarkFixture,
               timed: Timer, bench_quick: bool, measured: dict[str, float]) -> None:
    dense, sparse = layer_case.build()
    case = dict(index=index, kind=layer_case.kind, shape=layer_case.shape,
                batch=layer_case.batch, sparsity=layer_case.sparsity, impl=impl)
    _time_side(benchmark, timed, measured, dense if impl == "dense" else sparse,
               bench_conv.settings(bench_quick).budget, case,
               lambda: bench_conv.max_abs_err(dense, sparse))


def test_network(index: int, variant: str, batch: int, impl: str,
                 networks: dict[str, tuple[torch.nn.Module, torch.nn.Module]],
                 benchmark: BenchmarkFixture, timed: Timer, bench_quick: bool,
                 measured: dict[str, float]) -> None:
    d, sp = networks[variant]
    x = bench_conv.network_input(batch)
    model = d if impl == "dense" else sp
    case = dict(index=index, kind="network", shape=bench_conv.network_shape(variant), batch=batch,
                sparsity=bench_conv.NETWORK_SPARSITY, impl=impl)
    _time_side(benchmark, timed, measured, lambda: model(x),
               bench_conv.settings(bench_quick).budget * bench_conv.NETWORK_BUDGET_FACTOR, case,
               lambda: bench_conv.max_abs_err(lambda: d(x), lambda: sp(x)))

"""A small, deterministic training loop shared by the demo and the end-to-end tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..sparsity import sparsity
from .data import Digits


def small_convnet() -> nn.Sequential:
    """Conv(1->16)-BN-ReLU - Conv(16->32)-BN-ReLU - MaxPool - Linear(512->10), for 8x8 digits.

    BatchNorm makes the conv layers scale-invariant, which RDA/iRDA need: their weights are
    ``-(sqrt(t)/gamma) * soft(gbar, l1)`` and grow with ``t`` rather than staying near the init.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )  # fmt: skip


def ds_convnet() -> nn.Sequential:
    """A depthwise-separable (MobileNetV1-style) convnet for 8x8 digits:
    Conv(1->16)-BN-ReLU, depthwise 3x3-BN-ReLU, pointwise 1x1 (16->64)-BN-ReLU, MaxPool,
    Linear(1024->10). :func:`sparseopt.nn.sparsify` turns its depthwise and pointwise convs
    into sparse layers that run compressed at inference."""

    def cbr(cin: int, cout: int, k: int, groups: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*cbr(1, 16, 3), *cbr(16, 16, 3, groups=16), *cbr(16, 64, 1),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 4 * 4, 10))


@dataclass
class RunResult:
    """What one training run produced: final metrics and the per-epoch history."""

    accuracy: float
    sparsity: float
    train_time_s: float
    step_time_ms: float
    history: list[dict[str, float]] = field(default_factory=list)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    out = model(x).argmax(1)
    model.train()
    return (out == y).float().mean().item()


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Digits,
    epochs: int,
    batch_size: int = 32,
    seed: int = 0,
    on_epoch_end: Callable[[int, torch.optim.Optimizer], Any] | None = None,
    step_fn: Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], Any]
    | None = None,
    progress: Any = None,
    eval_context: Callable[[torch.optim.Optimizer], Any] | None = None,
) -> RunResult:
    """Mini-batch training with cross-entropy; returns test accuracy and sparsity.

    ``on_epoch_end(epoch, optimizer)`` runs after each epoch (e.g. to start iRDA retraining);
    ``step_fn`` replaces the default backward + step (e.g. AdaHessian's create_graph backward);
    ``progress`` is an optional tqdm bar advanced once per step; ``eval_context(optimizer)``
    is entered around evaluations (PDCA's ``eval_params``: evaluate the sparse iterate).
    """

    def evaluating() -> Any:
        return eval_context(optimizer) if eval_context is not None else contextlib.nullcontext()

    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    history: list[dict[str, float]] = []
    step_time = 0.0
    steps = 0
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen).to(data.x_train.device)
        # Full batches only: a 3-sample tail batch would give BatchNorm noisy running stats.
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            if step_fn is None:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                t0 = time.perf_counter()
                optimizer.step()
            else:
                t0 = time.perf_counter()
                step_fn(model, optimizer, xb, yb)
            step_time += time.perf_counter() - t0
            steps += 1
            if progress is not None:
                progress.update(1)
        if on_epoch_end is not None:
            on_epoch_end(epoch, optimizer)
        with evaluating():
            history.append(
                dict(
                    epoch=epoch + 1,
                    accuracy=accuracy(model, data.x_test, data.y_test),
                    sparsity=sparsity(model),
                )
            )
    total = time.perf_counter() - start
    with evaluating():
        final_sparsity = sparsity(model)
        final_accuracy = accuracy(model, data.x_test, data.y_test)
    return RunResult(
        accuracy=final_accuracy,
        sparsity=final_sparsity,
        train_time_s=total,
        step_time_ms=1e3 * step_time / max(steps, 1),
        history=history,
    )

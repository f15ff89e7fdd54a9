"""Measuring sparsity: ``sparsity = zeros / numel`` (iRDA paper eq. 32; docs/algorithms.md
section 10)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .optim._base import L1_ON, check_choice, l1_covers

__all__ = ["sparsity", "sparsity_report", "SparsityReport", "LayerSparsity"]


def _named_tensors(obj: nn.Module | Iterable) -> list[tuple[str, Tensor]]:
    if isinstance(obj, nn.Module):
        return list(obj.named_parameters())
    if isinstance(obj, Tensor):
        return [("tensor", obj)]
    out = []
    for i, item in enumerate(obj):
        if isinstance(item, dict):  # an optimizer's param groups
            out += [(f"group{i}.{j}", p) for j, p in enumerate(item["params"])]
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor):
            out.append(item)  # named_parameters()
        elif isinstance(item, Tensor):
            out.append((str(i), item))
        else:
            raise TypeError(
                "sparsity: expected an nn.Module, tensors, (name, tensor) pairs or param groups, "
                f"got an item of type {type(item).__name__}"
            )
    return out


def _zeros(ts: list[Tensor]) -> list[int]:
    if not ts:
        return []
    # One host sync for all tensors on a device, not one per tensor. A DTensor (FSDP2) counts
    # the zeros of its shards and reduces them across ranks.
    counts = [(t.detach() == 0).sum() for t in ts]
    counts = [c.full_tensor() if hasattr(c, "full_tensor") else c for c in counts]
    return [int(c) for c in torch.stack([c.cpu() for c in counts]).tolist()]


def sparsity(model_or_params: nn.Module | Iterable, l1_on: str = "weights") -> float:
    """Fraction of exact zeros over the parameters the l1 term covers.

    Args:
        model_or_params: a module, an iterable of tensors, ``named_parameters()`` pairs, or an
            optimizer's ``param_groups``.
        l1_on: ``"weights"`` (default: parameters with ``dim > 1``) or ``"all"``.

    Returns 0.0 when nothing is covered.
    """
    check_choice("sparsity", "l1_on", l1_on, L1_ON)
    ts = [t for _, t in _named_tensors(model_or_params) if l1_covers(t, l1_on)]
    numel = sum(t.numel() for t in ts)
    return sum(_zeros(ts)) / numel if numel else 0.0


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    shape: tuple[int, ...]
    numel: int
    zeros: int
    covered: bool

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-parameter sparsity of a model; ``str(report)`` renders a table."""

    rows: tuple[LayerSparsity, ...]

    @property
    def total(self) -> float:
        """Sparsity over the covered parameters (what :func:`sparsity` returns)."""
        numel = sum(r.numel for r in self.rows if r.covered)
        return sum(r.zeros for r in self.rows if r.covered) / numel if numel else 0.0

    def to_markdown(self) -> str:
        """The report as a markdown table: one row per parameter (shape, size, exact zeros,
        sparsity; parameters outside the l1 term marked), then the sparsity of the l1-covered
        parameters together."""
        lines = ["| parameter | shape | numel | zeros | sparsity |", "|---|---|---:|---:|---:|"]
        for r in self.rows:
            mark = "" if r.covered else " (not l1)"
            lines.append(
                f"| {r.name}{mark} | {list(r.shape)} | {r.numel} | {r.zeros} | {r.sparsity:.1%} |"
            )
        lines.append(f"| **total (l1-covered)** | | | | **{self.total:.1%}** |")
        return "\n".join(lines)

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.rows] + [9])
        head = f"{'parameter':<{width}}  {'shape':<18} {'numel':>10} {'zeros':>10} {'sparsity':>9}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            mark = " " if r.covered else "*"
            lines.append(
                f"{r.name:<{width}}{mark} {str(list(r.shape)):<18} {r.numel:>10} {r.zeros:>10} "
                f"{r.sparsity:>9.1%}"
            )
        lines.append("-" * len(head))
        lines.append(f"{'total (l1-covered)':<{width}}  {'':<18} {'':>10} {'':>10} {self.total:>9.1%}")
        if any(not r.covered for r in self.rows):
            lines.append("* not covered by the l1 term (l1_on)")
        return "\n".join(lines)


def sparsity_report(model: nn.Module | Iterable, l1_on: str = "weights") -> SparsityReport:
    """Per-parameter zeros and sparsity of ``model`` (see :class:`SparsityReport`)."""
    check_choice("sparsity_report", "l1_on", l1_on, L1_ON)
    named = _named_tensors(model)
    zeros = _zeros([t for _, t in named])
    rows = tuple(
        LayerSparsity(name, tuple(t.shape), t.numel(), z, l1_covers(t, l1_on))
        for (name, t), z in zip(named, zeros)
    )
    return SparsityReport(rows)

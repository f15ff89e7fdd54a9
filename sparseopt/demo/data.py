"""The demo's data: scikit-learn's handwritten digits (ships with scikit-learn, no download)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Digits:
    """8x8 digit images as (N, 1, 8, 8) float32 in [0, 1] and int64 labels, split 1347/450."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def to(self, device: torch.device | str) -> Digits:
        return Digits(*(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)))


def load_digits(seed: int = 0, n_train: int = 1347) -> Digits:
    """Load ``sklearn.datasets.load_digits`` and split it with a fixed-seed permutation."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise RuntimeError(
            "the digits demo needs scikit-learn: pip install 'sparseopt[demo]' or scikit-learn"
        ) from exc
    data = _load()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return Digits(x[:n_train], y[:n_train], x[n_train:], y[n_train:])

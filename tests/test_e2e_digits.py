"""End to end: a small convnet on scikit-learn's digits, trained with iRDA and with SGD."""

from __future__ import annotations

import pytest
import torch

import sparseopt
from sparseopt.demo import load_digits, small_convnet, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_irda_reaches_90_percent_with_half_the_weights_zero(digits) -> None:
    torch.manual_seed(0)
    model = small_convnet()
    sparseopt.init.irda_model_(model, s=4.0, generator=torch.Generator().manual_seed(0))
    opt = sparseopt.IRDA(model.parameters(), l1=1e-3, gamma=1.0, retrain_after=15 * 42)
    result = train(model, opt, digits, epochs=20)
    assert opt.in_retraining
    assert result.accuracy >= 0.90, result
    assert result.sparsity >= 0.50, result
    # The zeros are exact zeros of the covered weights, visible layer by layer.
    report = sparseopt.sparsity_report(model)
    assert report.total == pytest.approx(result.sparsity)


def test_sgd_baseline_is_dense(digits) -> None:
    torch.manual_seed(0)
    model = small_convnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    result = train(model, opt, digits, epochs=10)
    assert result.accuracy >= 0.90, result
    assert result.sparsity < 0.01, result


def test_prox_sgd_zeros_fewer_weights_than_irda_at_the_same_l1(digits) -> None:
    torch.manual_seed(0)
    model = small_convnet()
    opt = sparseopt.ProxSGD(model.parameters(), lr=0.05, l1=1e-3, momentum=0.9)
    result = train(model, opt, digits, epochs=10)
    assert result.accuracy >= 0.90, result
    assert result.sparsity < 0.5, result  # the iRDA paper's point: Prox-SGD's threshold is tiny

"""The digits demo: ``python -m sparseopt.demo`` trains a small convnet on scikit-learn's digits
with each optimizer and compares accuracy, sparsity and speed."""

from .data import Digits, load_digits
from .train import RunResult, accuracy, small_convnet, train

__all__ = ["Digits", "load_digits", "RunResult", "accuracy", "small_convnet", "train"]

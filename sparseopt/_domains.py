"""The domain of every float hyperparameter of every op: one table, read by the optimizers'
checks (sparseopt.optim), the pure-PyTorch references and the op table (sparseopt.ops.specs).
The C++ ops check the same domains (csrc/common/hyper.h); tests/test_errors.py holds both
backends to this table."""

from __future__ import annotations

import math
from typing import Any, NamedTuple


class Real(NamedTuple):
    """A finite real number in a range; ``None`` bounds are open. ``finite=False``: any value
    but NaN (a clamp bound, which may be infinite)."""

    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = False
    finite: bool = True

    def contains(self, value: float) -> bool:
        if math.isnan(value) or (self.finite and not math.isfinite(value)):
            return False
        if self.low is not None and not (value >= self.low if self.low_inclusive
                                         else value > self.low):  # fmt: skip
            return False
        return self.high is None or (value <= self.high if self.high_inclusive
                                     else value < self.high)  # fmt: skip

    def accepted(self, name: str) -> str:
        """The op-level wording (as the C++ ops write it)."""
        if not self.finite:
            return "a float that is not NaN (-inf and inf included)"
        lo = ">=" if self.low_inclusive else ">"
        if self.high is None:
            return f"a finite float {lo} {self.low:g}"
        lo = "<=" if self.low_inclusive else "<"
        hi = "<=" if self.high_inclusive else "<"
        return f"{self.low:g} {lo} {name} {hi} {self.high:g}"

    def bounds(self) -> dict[str, Any]:
        """Keyword arguments of sparseopt.optim._base.check_real."""
        return dict(low=self.low, low_inclusive=self.low_inclusive, high=self.high,
                    high_inclusive=self.high_inclusive)  # fmt: skip


NONNEGATIVE = Real(0.0)
POSITIVE = Real(0.0, low_inclusive=False)
UNIT = Real(0.0, high=1.0)  # [0, 1): momentum, beta1, beta2
CLAMP_BOUND = Real(finite=False)  # act_min, act_max (the ops also need act_min <= act_max)

HYPER: dict[str, dict[str, Real]] = {
    "prox_sgd_step_": dict(lr=NONNEGATIVE, l1=NONNEGATIVE, momentum=UNIT,
                           weight_decay=NONNEGATIVE),
    "sqrt_t_prox_sgd_step_": dict(lr=NONNEGATIVE, l1=NONNEGATIVE, gamma=POSITIVE, momentum=UNIT,
                                  weight_decay=NONNEGATIVE),
    "rda_step_": dict(lr=NONNEGATIVE, l1=NONNEGATIVE, gamma=POSITIVE),
    "adam_step_": dict(lr=NONNEGATIVE, beta1=UNIT, beta2=UNIT, eps=POSITIVE,
                       weight_decay=NONNEGATIVE, l1=NONNEGATIVE),
    "hutchinson_diag_": dict(weight=POSITIVE),
    "adahessian_step_": dict(lr=NONNEGATIVE, beta1=UNIT, beta2=UNIT, eps=POSITIVE,
                             weight_decay=NONNEGATIVE,
                             hessian_power=Real(0.0, low_inclusive=False, high=1.0,
                                                high_inclusive=True)),
    "obproxsg_step_": dict(lr=NONNEGATIVE, l1=NONNEGATIVE, eps=NONNEGATIVE),
    "pdca_step_": dict(lr=NONNEGATIVE, l1=NONNEGATIVE, theta=POSITIVE, weight_decay=NONNEGATIVE),
    "csr_pointwise_conv2d": {},
    "sparse_depthwise_conv2d": {},
    "csr_pointwise_conv2d_fused": dict(act_min=CLAMP_BOUND, act_max=CLAMP_BOUND),
    "sparse_depthwise_conv2d_fused": dict(act_min=CLAMP_BOUND, act_max=CLAMP_BOUND),
}


def check_op_hyper(op: str, **values: float) -> None:
    """An op's checks of its float arguments (RuntimeError, worded as the C++ ops word it)."""
    domains = HYPER[op]
    for name, value in values.items():
        domain = domains[name]
        if not domain.contains(value):
            raise RuntimeError(
                f"sparseopt::{op}: {name} = {value} is invalid; accepted: {domain.accepted(name)}"
            )

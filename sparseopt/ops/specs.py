"""The op table: one :class:`OpSpec` per op, the one Python definition of each op.

Registration (:mod:`sparseopt.ops`), the optimizers' hyperparameter checks and the op-level
test suites (tests/test_ops.py, test_kernels.py, test_fuzz.py, test_errors.py) iterate it, as
torch's OpInfo/OptimizerInfo tables serve torch's. The C++ definitions in csrc/ops/*.cpp are the
source of truth for the schemas; tests/test_ops.py checks that these copies match them.

Adding an element-wise optimizer op: a rule header in csrc/rules/, its op in csrc/ops/ (and its
CUDA instantiation in csrc/cuda/), its reference in sparseopt/reference/, its hyperparameter
domains in sparseopt/_domains.py, and one row here; the optimizer class then needs only its
state and argument list (see README, "Layout").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from .. import reference
from .._domains import HYPER, Real
from .._schedules import pdca_betas
from ..nn.formats import dense_to_csr, dense_to_taps
from . import _conv


class OpSpec(NamedTuple):
    name: str
    schema: str  # without the name; `float lr` ops also get the overload `<name>.tensor_lr`
    reference: Callable[..., Any]  # pure PyTorch: the fallback and the tests' oracle
    sample: Callable[[str, torch.dtype], tuple[Any, ...]]  # valid positional arguments
    fake: Callable[..., Any] | None = None  # None: an in-place op (the generic fake)
    autograd: tuple[Callable[..., Any], Callable[..., Any]] | None = None  # backward, setup
    @property
    def hyper(self) -> dict[str, Real]:
        """The domain of each float hyperparameter (sparseopt/_domains.py)."""
        return HYPER[self.name]

    @property
    def arg_names(self) -> list[str]:
        inner = self.schema[1 : self.schema.index(") ->")]
        return [a.split("=")[0].split()[-1] for a in inner.split(", ")]

    @property
    def lr_index(self) -> int | None:
        """The position of ``lr`` when it is a float (then a ``.tensor_lr`` overload exists)."""
        return self.arg_names.index("lr") if "float lr," in self.schema else None

    @property
    def tensor_lr_schema(self) -> str | None:
        return None if self.lr_index is None else self.schema.replace("float lr,", "Tensor lr,")


# -- sample arguments (three tensors of different shapes, GradScaler on) ----------------------
def _tensors(device: str, dtype: torch.dtype) -> tuple[list[torch.Tensor], Callable[..., Any]]:
    gen = torch.Generator().manual_seed(0)

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype)

    return [t(5, 3), t(7), t(2, 3, 3, 3)], t


def _step_sample(state: Callable[[list[torch.Tensor], Callable[..., Any]], list[Any]],
                 hyper: tuple[Any, ...]) -> Callable[[str, torch.dtype], tuple[Any, ...]]:
    """Arguments ``(params, grads, *state(params, t), *hyper, grad_scale, found_inf)``."""

    def sample(device: str, dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        params, t = _tensors(device, dtype)
        grads = [t(*p.shape) for p in params]
        scale = torch.full((), 4.0, device=device)
        inf = torch.zeros((), device=device)
        return (params, grads, *state(params, t), *hyper, scale, inf)

    return sample


def _zeros(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) for p in params]


def _steps(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros((), device=p.device) for p in params]


def _hutchinson_sample(device: str, dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
    params, t = _tensors(device, dtype)
    return (_zeros(params), [t(*p.shape).sign() for p in params], [t(*p.shape) for p in params],
            0.5, False)


def _pointwise_sample(device: str, dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
    _, t = _tensors("cpu", dtype)
    w = t(6, 4, 1, 1) * (t(6, 4, 1, 1) > 0)
    return (t(2, 4, 5, 5).to(device), *(x.to(device) for x in dense_to_csr(w)),
            t(6).to(device))


def _depthwise_sample(device: str, dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
    _, t = _tensors("cpu", dtype)
    w = t(4, 1, 3, 3) * (t(4, 1, 3, 3) > 0)
    return (t(2, 4, 6, 6).to(device), *(x.to(device) for x in dense_to_taps(w)),
            t(4).to(device), [3, 3], [2, 1], [1, 1])


def _fused(sample: Callable[[str, torch.dtype], tuple[Any, ...]], act_min: float, act_max: float,
           channel_major: bool) -> Callable[[str, torch.dtype], tuple[Any, ...]]:
    """The arguments of a ``*_fused`` op: its convolution's, then the clamp and the layout."""

    def fused(device: str, dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        return (*sample(device, dtype), act_min, act_max, channel_major)

    return fused


_STEP = "Tensor? grad_scale=None, Tensor? found_inf=None) -> ()"

SPECS: dict[str, OpSpec] = {s.name: s for s in [
    OpSpec(
        "prox_sgd_step_",
        "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, float lr, "
        "float l1, float momentum, float weight_decay, " + _STEP,
        reference.prox_sgd_step_,
        _step_sample(lambda ps, t: [_zeros(ps)], (0.1, 0.01, 0.9, 1e-4)),
    ),
    OpSpec(
        "sqrt_t_prox_sgd_step_",
        "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, "
        "Tensor(d!)[] steps, float lr, float l1, float gamma, float momentum, "
        "float weight_decay, " + _STEP,
        reference.sqrt_t_prox_sgd_step_,
        _step_sample(lambda ps, t: [[], _steps(ps)], (0.1, 0.01, 2.0, 0.0, 0.0)),
    ),
    OpSpec(
        "rda_step_",
        "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] grad_avgs, Tensor[] centers, "
        "Tensor(d!)[] steps, float lr, float l1, float gamma, bool retrain, int retrain_after, "
        + _STEP,
        reference.rda_step_,
        _step_sample(lambda ps, t: [_zeros(ps), [t(*p.shape) for p in ps], _steps(ps)],
                     (1.0, 0.1, 3.0, False, 2)),
    ),
    OpSpec(
        "adam_step_",
        "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
        "Tensor(d!)[] exp_avg_sqs, Tensor(e!)[] max_exp_avg_sqs, Tensor(f!)[] steps, float lr, "
        "float beta1, float beta2, float eps, float weight_decay, bool amsgrad, bool maximize, "
        "bool decoupled_weight_decay, float l1, " + _STEP,
        reference.adam_step_,
        _step_sample(lambda ps, t: [_zeros(ps), _zeros(ps), _zeros(ps), _steps(ps)],
                     (1e-3, 0.9, 0.999, 1e-8, 1e-2, True, False, True, 1e-3)),
    ),
    OpSpec(
        "hutchinson_diag_",
        "(Tensor(a!)[] diags, Tensor[] zs, Tensor[] hzs, float weight, bool accumulate) -> ()",
        reference.hutchinson_diag_,
        _hutchinson_sample,
    ),
    OpSpec(
        "adahessian_step_",
        "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
        "Tensor(d!)[] exp_hessian_diag_sqs, Tensor[] hessian_diags, Tensor(e!)[] steps, "
        "float lr, float beta1, float beta2, float eps, float weight_decay, "
        "float hessian_power, " + _STEP,
        reference.adahessian_step_,
        _step_sample(lambda ps, t: [_zeros(ps), _zeros(ps), [t(*p.shape).abs() for p in ps],
                                    _steps(ps)],
                     (0.15, 0.9, 0.999, 1e-4, 0.0, 1.0)),
    ),
    OpSpec(
        "obproxsg_step_",
        "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] steps, float lr, float l1, "
        "float eps, int steps_per_epoch, int n_p, int n_o, " + _STEP,
        reference.obproxsg_step_,
        _step_sample(lambda ps, t: [_steps(ps)], (0.1, 0.01, 0.0, 1, 1, 1)),
    ),
    OpSpec(
        "pdca_step_",
        "(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] iterates, Tensor(d!)[] steps, "
        "Tensor betas, float lr, float l1, float theta, float weight_decay, " + _STEP,
        reference.pdca_step_,
        _step_sample(lambda ps, t: [[t(*p.shape) for p in ps], _steps(ps),
                                    torch.tensor(pdca_betas(3), dtype=torch.float64,
                                                 device=ps[0].device)],
                     (0.05, 0.01, 5.0, 1e-4)),
    ),
    OpSpec(
        "csr_pointwise_conv2d",
        "(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor? bias=None) -> Tensor",
        reference.csr_pointwise_conv2d,
        _pointwise_sample,
        fake=_conv.csr_pointwise_conv2d_fake,
        autograd=(_conv.pointwise_backward, _conv.pointwise_setup_context),
    ),
    OpSpec(
        "sparse_depthwise_conv2d",
        "(Tensor x, Tensor tap_ptr, Tensor tap_idx, Tensor values, Tensor? bias, "
        "int[2] kernel_size, int[2] stride=1, int[2] padding=0) -> Tensor",
        reference.sparse_depthwise_conv2d,
        _depthwise_sample,
        fake=_conv.sparse_depthwise_conv2d_fake,
        autograd=(_conv.depthwise_backward, _conv.depthwise_setup_context),
    ),
    OpSpec(
        "csr_pointwise_conv2d_fused",
        "(Tensor x, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor? bias, float act_min, "
        "float act_max, bool channel_major) -> Tensor",
        reference.csr_pointwise_conv2d_fused,
        _fused(_pointwise_sample, 0.0, 6.0, True),
        fake=_conv.csr_pointwise_conv2d_fused_fake,
    ),
    OpSpec(
        "sparse_depthwise_conv2d_fused",
        "(Tensor x, Tensor tap_ptr, Tensor tap_idx, Tensor values, Tensor? bias, "
        "int[2] kernel_size, int[2] stride, int[2] padding, float act_min, float act_max, "
        "bool channel_major) -> Tensor",
        reference.sparse_depthwise_conv2d_fused,
        _fused(_depthwise_sample, 0.0, math.inf, False),
        fake=_conv.sparse_depthwise_conv2d_fused_fake,
    ),
]}

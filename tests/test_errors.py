"""Bad input: clear errors, raised before anything is mutated."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import BAD_LR, BAD_NUMBERS
from torch import nn

import sparseopt
from sparseopt import reference

NATIVE = sparseopt.ops.extension_loaded()
OP_BACKENDS = ["reference"] + (["native"] if NATIVE else [])


CTORS = {
    "ProxSGD": (sparseopt.ProxSGD, dict(lr=0.1, l1=1e-3), ["lr", "l1", "momentum",
                                                           "weight_decay"]),
    "SqrtTProxSGD": (sparseopt.SqrtTProxSGD, dict(lr=0.1, l1=1e-3), ["lr", "l1", "gamma"]),
    "RDA": (sparseopt.RDA, dict(l1=1e-3), ["l1", "gamma", "lr"]),
    "IRDA": (sparseopt.IRDA, dict(l1=1e-3), ["l1", "gamma", "lr"]),
}


def _params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]


@pytest.mark.parametrize("name", list(CTORS))
def test_bad_hyperparameters_are_rejected_with_the_accepted_range(name: str) -> None:
    cls, good, keys = CTORS[name]
    for key in keys:
        # lr may be a one-element tensor (as in torch.optim); other hyperparameters may not.
        bads = BAD_NUMBERS if key != "lr" else BAD_LR
        for bad in bads:
            with pytest.raises(ValueError, match=rf"{name}: .*{key}.*accepted"):
                cls(_params(), **{**good, key: bad})
    if "gamma" in keys:
        with pytest.raises(ValueError, match="gamma > 0"):
            cls(_params(), **{**good, "gamma": 0.0})
    with pytest.raises(ValueError, match="backend"):
        cls(_params(), **good, backend="cuda")
    with pytest.raises(ValueError, match="l1_on"):
        cls(_params(), **good, l1_on="biases")


def test_required_arguments_say_how_to_call() -> None:
    with pytest.raises(ValueError, match=r"lr is required; e\.g\. ProxSGD\("):
        sparseopt.ProxSGD(_params(), l1=1e-3)
    with pytest.raises(ValueError, match="l1 is required"):
        sparseopt.SqrtTProxSGD(_params(), lr=0.1)
    with pytest.raises(ValueError, match="l1 is required"):
        sparseopt.IRDA(_params())
    with pytest.raises(ValueError, match="momentum < 1"):
        sparseopt.ProxSGD(_params(), lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="retrain_after"):
        sparseopt.IRDA(_params(), l1=1e-3, retrain_after=-3)
    with pytest.raises(ValueError, match="w0"):
        sparseopt.RDA(_params(), l1=1e-3, w0="random")


def test_complex_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"complex dtype torch.complex64.*accepted: float32"):
        sparseopt.ProxSGD([nn.Parameter(torch.zeros(3, dtype=torch.complex64))], lr=0.1)


def _snapshot(opt: torch.optim.Optimizer, params: list[torch.Tensor]):
    return [p.detach().clone() for p in params], {
        id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params if p in opt.state
    }


def _assert_unchanged(opt, params, snap) -> None:
    values, state = snap
    for p, v in zip(params, values):
        assert torch.equal(p.detach(), v)
    for p in params:
        for k, v in state.get(id(p), {}).items():
            assert torch.equal(opt.state[p][k], v)


@pytest.mark.parametrize("name", list(CTORS))
def test_sparse_grad_in_a_later_group_changes_nothing(name: str) -> None:
    cls, good, _ = CTORS[name]
    dense, emb = _params(), nn.Parameter(torch.randn(10, 3))
    opt = cls([{"params": dense}, {"params": [emb]}], **good)
    for p in dense:
        p.grad = torch.randn_like(p)
    emb.grad = torch.randn_like(emb)
    opt.step()  # state exists now
    snap = _snapshot(opt, dense + [emb])
    emb.grad = torch.randn_like(emb).to_sparse()
    with pytest.raises(RuntimeError, match=r"param_groups\[1\].*sparse gradient"):
        opt.step()
    _assert_unchanged(opt, dense + [emb], snap)


def test_hyperparameter_edited_to_a_bad_value_fails_before_the_step() -> None:
    params = _params()
    opt = sparseopt.ProxSGD(params, lr=0.1, l1=1e-3)
    for p in params:
        p.grad = torch.randn_like(p)
    snap = _snapshot(opt, params)
    opt.param_groups[0]["l1"] = -1.0
    with pytest.raises(ValueError, match="invalid l1"):
        opt.step()
    _assert_unchanged(opt, params, snap)


def test_state_on_another_device_names_the_parameter() -> None:
    model = nn.Linear(3, 2)
    opt = sparseopt.IRDA(model.parameters(), l1=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    state = opt.state_dict()
    moved = nn.Linear(3, 2, device="meta")
    opt2 = sparseopt.IRDA(moved.parameters(), l1=1e-3)
    opt2.load_state_dict(state)  # load_state_dict moves state to the parameters' device
    assert opt2.state[moved.weight]["grad_avg"].device.type == "meta"
    # State left on another device (as when a model is moved after its optimizer was built).
    for key, value in list(opt.state[model.weight].items()):
        opt.state[model.weight][key] = value.to("meta")
    snap = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"state 'step' of parameter 0 .* is on meta but the "
                                           r"parameter is on cpu"):
        opt.step()
    for p, v in zip(model.parameters(), snap):
        assert torch.equal(p.detach(), v)


def test_load_state_dict_with_wrong_shapes_is_rejected() -> None:
    a = sparseopt.ProxSGD([nn.Parameter(torch.zeros(3, 2))], lr=0.1, momentum=0.9)
    a.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    a.step()
    b = sparseopt.ProxSGD([nn.Parameter(torch.zeros(2, 3))], lr=0.1, momentum=0.9)
    with pytest.raises(RuntimeError, match="momentum_buffer.*shape"):
        b.load_state_dict(a.state_dict())


def test_native_backend_without_kernel_for_the_device() -> None:
    p = nn.Parameter(torch.zeros(2, 2, device="meta"))
    p.grad = torch.zeros_like(p)
    opt = sparseopt.ProxSGD([p], lr=0.1, backend="native")
    with pytest.raises(RuntimeError, match="no native kernel for device type 'meta'"):
        opt.step()


# -- op level: the native ops and the references reject the same things the same way ---------


def _fn(backend: str, name: str):
    return getattr(reference if backend == "reference" else torch.ops.sparseopt, name)


def _lists():
    ps = [torch.randn(5, 3), torch.randn(7)]
    return ps, [torch.randn_like(p) for p in ps]


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda ps, gs: gs.pop(), "grads has 1 tensors but params has 2"),
        (lambda ps, gs: gs.__setitem__(1, gs[1].double()), r"grads\[1\] has dtype"),
        (lambda ps, gs: gs.__setitem__(1, torch.randn(8)), r"grads\[1\] has shape"),
        (lambda ps, gs: gs.__setitem__(0, gs[0].to_sparse()), "sparse gradients are not"),
        (lambda ps, gs: gs.__setitem__(1, gs[1].to("meta")), "meta"),
        (lambda ps, gs: ps.__setitem__(1, ps[1].to(torch.int32)), r"params\[1\] has dtype"),
    ],
)
def test_op_rejects_bad_lists_before_writing(backend, mutate, match) -> None:
    ps, gs = _lists()
    mutate(ps, gs)
    before = [p.clone() for p in ps]
    with pytest.raises(RuntimeError, match=match):
        _fn(backend, "prox_sgd_step_")(ps, gs, [], 0.1, 0.1, 0.0, 0.0)
    for p, b in zip(ps, before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("backend", OP_BACKENDS)
def test_op_rejects_bad_scalars(backend) -> None:
    ps, gs = _lists()
    steps = [torch.zeros(()), torch.zeros((), dtype=torch.float64)]
    with pytest.raises(RuntimeError, match=r"steps\[1\] must be a float32"):
        _fn(backend, "sqrt_t_prox_sgd_step_")(ps, gs, [], steps, 0.1, 0.1, 1.0, 0.0, 0.0)
    assert steps[0].item() == 0  # not bumped
    with pytest.raises(RuntimeError, match=r"lr = -0.1 is invalid; accepted: a finite float >= 0"):
        _fn(backend, "prox_sgd_step_")(ps, gs, [], -0.1, 0.1, 0.0, 0.0)
    with pytest.raises(RuntimeError, match="l1 = nan is invalid"):
        _fn(backend, "prox_sgd_step_")(ps, gs, [], 0.1, math.nan, 0.0, 0.0)
    with pytest.raises(RuntimeError, match="momentum_buffers must hold one buffer"):
        _fn(backend, "prox_sgd_step_")(ps, gs, [], 0.1, 0.1, 0.9, 0.0)
    with pytest.raises(RuntimeError, match="centers must be empty"):
        _fn(backend, "rda_step_")(ps, gs, [torch.zeros_like(p) for p in ps], [ps[0]],
                                  [torch.zeros(()) for _ in ps], 1.0, 0.1, 1.0, False, -1)


# -- op level, from the op table: every float hyperparameter outside its domain ---------------
SPECS_WITH_HYPER = [s for s in sparseopt.ops.SPECS.values() if s.hyper]


def _outside(domain) -> list[float]:
    """Values just outside ``domain`` (and the non-finite ones)."""
    out = [math.nan, math.inf, -math.inf]
    if domain.low is not None:
        out.append(domain.low if not domain.low_inclusive else domain.low - 1e-3)
    if domain.high is not None:
        out.append(domain.high if not domain.high_inclusive else domain.high + 1e-3)
    return [v for v in out if not domain.contains(v)]


@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("spec", SPECS_WITH_HYPER, ids=[s.name for s in SPECS_WITH_HYPER])
def test_op_rejects_each_hyperparameter_outside_its_domain(backend, spec) -> None:
    """Both backends hold each float argument to its domain in sparseopt/_domains.py, with the
    same words, before writing anything."""
    fn = spec.reference if backend == "reference" else getattr(torch.ops.sparseopt, spec.name)
    for name, domain in spec.hyper.items():
        i = spec.arg_names.index(name)
        for bad in _outside(domain):
            args = spec.sample("cpu")
            before = [t.clone() for a in args for t in (a if isinstance(a, list) else [a])
                      if isinstance(t, torch.Tensor)]  # fmt: skip
            accepted = re.escape(domain.accepted(name))
            with pytest.raises(RuntimeError, match=rf"{name} = \S+ is invalid; accepted: {accepted}"):
                fn(*args[:i], bad, *args[i + 1 :])
            after = [t for a in args for t in (a if isinstance(a, list) else [a])
                     if isinstance(t, torch.Tensor)]  # fmt: skip
            assert all(torch.equal(x, y) for x, y in zip(after, before)), (name, bad)

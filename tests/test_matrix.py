"""One matrix over every optimizer: bad input fails before anything changes, a resumed run equals
an unbroken one bit for bit, GradScaler's inf steps change nothing, and a compiled step
(``fullgraph=True``) equals the eager one."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

import sparseopt

FACTORIES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "ProxSGD": lambda p: sparseopt.ProxSGD(p, lr=0.05, l1=1e-2, momentum=0.9),
    "SqrtTProxSGD": lambda p: sparseopt.SqrtTProxSGD(p, lr=0.05, l1=1e-3),
    "RDA": lambda p: sparseopt.RDA(p, l1=1e-2, gamma=20.0),
    "IRDA": lambda p: sparseopt.IRDA(p, l1=1e-2, gamma=20.0, retrain_after=4),
    "Adam": lambda p: sparseopt.Adam(p, lr=1e-2, amsgrad=True),
    "AdamW": lambda p: sparseopt.AdamW(p, lr=1e-2, l1=1e-2),
    "OBProxSG": lambda p: sparseopt.OBProxSG(p, lr=0.05, l1=1e-2, n_p=1, n_o=1,
                                             steps_per_epoch=2),
    "OBProxSGPlus": lambda p: sparseopt.OBProxSGPlus(p, lr=0.05, l1=1e-2, n_p=1,
                                                     steps_per_epoch=2),
    "PDCA": lambda p: sparseopt.PDCA(p, lr=0.05, l1=1e-2, theta=5.0, restart=3),
    "AdaHessian": lambda p: sparseopt.AdaHessian(p, lr=0.05, seed=0),
}
NAMES = list(FACTORIES)
FIRST_ORDER = [n for n in NAMES if n != "AdaHessian"]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def backward(model: nn.Module, t: int, name: str, scale: float = 1.0, scaler=None) -> None:
    gen = torch.Generator().manual_seed(t)
    x, y = torch.randn(5, 2, 6, 6, generator=gen), torch.randint(0, 3, (5,), generator=gen)
    loss = nn.functional.cross_entropy(model(x), y) * scale
    if scaler is not None:
        loss = scaler.scale(loss)
    loss.backward(create_graph=name == "AdaHessian")


def train(model: nn.Module, opt: torch.optim.Optimizer, name: str, start: int, stop: int) -> None:
    for t in range(start, stop):
        opt.zero_grad()
        backward(model, t, name)
        opt.step()


def snapshot(model: nn.Module, opt: torch.optim.Optimizer):
    return ([p.detach().clone() for p in model.parameters()],
            copy.deepcopy({k: v for k, v in opt.state_dict()["state"].items()}))


def assert_unchanged(model, opt, snap) -> None:
    params, state = snap
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p.detach(), q)
    now = opt.state_dict()["state"]
    assert now.keys() == state.keys()
    for k in state:
        for key, v in state[k].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(now[k][key], v), (k, key)


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_state_dict_is_bit_exact(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 8)
    unbroken = [p.detach().clone() for p in model.parameters()]

    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 4)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    resumed = make_model()
    resumed.load_state_dict(saved["model"])
    opt2 = FACTORIES[name](resumed.parameters())
    opt2.load_state_dict(saved["opt"])
    train(resumed, opt2, name, 4, 8)
    for a, b in zip(resumed.parameters(), unbroken):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradient_fails_before_any_change(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 2)
    snap = snapshot(model, opt)
    opt.zero_grad()
    backward(model, 3, name)
    last = list(model.parameters())[-1]
    last.grad = last.grad.detach().to_sparse()
    with pytest.raises(RuntimeError, match="sparse gradient"):
        opt.step()
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameter_made_invalid_fails_before_any_change(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 2)
    snap = snapshot(model, opt)
    key = "lr" if "lr" in opt.param_groups[0] else "l1"
    opt.param_groups[0][key] = -1.0
    opt.zero_grad()
    backward(model, 3, name)
    with pytest.raises(ValueError, match=rf"{key}.*accepted"):
        opt.step()
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("name", NAMES)
def test_complex_parameters_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="complex"):
        FACTORIES[name]([nn.Parameter(torch.zeros(3, 3, dtype=torch.complex64))])


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_of_another_shape_is_rejected(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 2)
    other = nn.Sequential(nn.Conv2d(2, 5, 3), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))
    target = FACTORIES[name](other.parameters())
    per_element = any(isinstance(v, torch.Tensor) and v.dim() > 0
                      for st in opt.state.values() for v in st.values())
    if not per_element:
        # State of step counters only (e.g. SqrtTProxSGD without momentum, OBProx-SG): nothing
        # depends on the shapes, so the load is valid and training goes on.
        target.load_state_dict(opt.state_dict())
        train(other, target, name, 2, 3)
        return
    with pytest.raises((RuntimeError, ValueError), match="shape"):
        target.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_grad_scaler_inf_step_changes_nothing(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 2)
    snap = snapshot(model, opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    opt.zero_grad()
    backward(model, 5, name, scale=float("inf"), scaler=scaler)
    scaler.step(opt)
    scaler.update()
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_compiled_step_without_graph_breaks_equals_eager(name: str) -> None:
    model, twin = make_model(), make_model()
    opt, ref = FACTORIES[name](model.parameters()), FACTORIES[name](twin.parameters())
    train(model, opt, name, 0, 1)
    train(twin, ref, name, 0, 1)
    torch._dynamo.reset()  # each optimizer class compiles the shared step afresh
    compiled = torch.compile(opt.step, fullgraph=True, backend="aot_eager")
    for t in range(1, 4):
        opt.zero_grad()
        backward(model, t, name)
        compiled()
        train(twin, ref, name, t, t + 1)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)

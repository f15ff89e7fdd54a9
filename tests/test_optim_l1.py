"""The l1 optimizers as drop-in torch optimizers: backends, state_dict, groups, closures,
schedulers, GradScaler, torch.compile and the iRDA phases (docs/algorithms.md sections 1-4)."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

import sparseopt

NATIVE = sparseopt.ops.extension_loaded()

FACTORIES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "ProxSGD": lambda p, **kw: sparseopt.ProxSGD(p, lr=0.05, l1=1e-2, momentum=0.9,
                                                  weight_decay=1e-4, **kw),
    "SqrtTProxSGD": lambda p, **kw: sparseopt.SqrtTProxSGD(p, lr=0.05, l1=1e-3, gamma=2.0, **kw),
    "RDA": lambda p, **kw: sparseopt.RDA(p, l1=1e-2, gamma=20.0, **kw),
    "IRDA": lambda p, **kw: sparseopt.IRDA(p, l1=1e-2, gamma=20.0, retrain_after=12, **kw),
}


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 4)
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(16, 3, 7, 7, generator=gen), torch.randint(0, 4, (16,), generator=gen)


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, start: int, stop: int) -> None:
    for t in range(start, stop):
        x, y = batch(t)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"parameter {i} differs"


@pytest.mark.skipif(not NATIVE, reason="the native extension is not built")
@pytest.mark.parametrize("name", list(FACTORIES))
def test_native_backend_equals_reference_backend(name: str) -> None:
    runs = []
    for backend in ("native", "reference"):
        model = make_model()
        opt = FACTORIES[name](model.parameters(), backend=backend)
        train_steps(model, opt, 0, 25)
        runs.append(params_of(model))
    assert_same(*runs)
    assert sparseopt.sparsity(runs[0]) > 0  # the l1 term is active


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_resume_is_bit_exact(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train_steps(model, opt, 0, 20)
    unbroken = params_of(model)

    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train_steps(model, opt, 0, 10)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    resumed_model = make_model(seed=99)
    resumed_model.load_state_dict(saved["model"])
    resumed = FACTORIES[name](resumed_model.parameters())
    resumed.load_state_dict(saved["opt"])
    train_steps(resumed_model, resumed, 10, 20)
    assert_same(params_of(resumed_model), unbroken)


def test_irda_phase_is_saved_and_restored() -> None:
    model = make_model()
    opt = sparseopt.IRDA(model.parameters(), l1=1e-2, gamma=20.0)
    train_steps(model, opt, 0, 3)
    assert not opt.in_retraining
    opt.start_retraining()
    assert opt.in_retraining
    state = opt.state_dict()
    other = sparseopt.IRDA(make_model().parameters(), l1=1e-2, gamma=20.0)
    other.load_state_dict(state)
    assert other.in_retraining


def test_irda_retrain_after_switches_phase_and_freezes_zeros() -> None:
    model = make_model()
    opt = sparseopt.IRDA(model.parameters(), l1=1e-2, gamma=20.0, retrain_after=5)
    train_steps(model, opt, 0, 4)
    assert not opt.in_retraining
    train_steps(model, opt, 4, 5)
    assert opt.in_retraining  # the next step (t = 6) retrains
    zeros = [p.detach() == 0 for p in model.parameters()]
    train_steps(model, opt, 5, 15)
    for z, p in zip(zeros, model.parameters()):
        assert torch.all(p[z] == 0)


def test_rda_w0_init_keeps_the_starting_point_as_center() -> None:
    model = make_model()
    start = params_of(model)
    opt = sparseopt.RDA(model.parameters(), l1=0.0, gamma=1e6)  # tiny steps
    train_steps(model, opt, 0, 1)
    for s, p in zip(start, model.parameters()):
        torch.testing.assert_close(p.detach(), s, atol=1e-4, rtol=0)
        assert torch.equal(opt.state[p]["center"], s)
    zero = sparseopt.RDA(make_model().parameters(), l1=0.0, gamma=1e6, w0="zero")
    train_steps(make_model(), zero, 0, 0)
    assert "center" not in str(zero.state_dict()["state"])


def test_param_groups_and_add_param_group() -> None:
    model = make_model()
    convs = [p for p in model.parameters() if p.dim() == 4]
    rest = [p for p in model.parameters() if p.dim() != 4]
    opt = sparseopt.ProxSGD([{"params": convs, "l1": 0.5}], lr=0.1)
    opt.add_param_group({"params": rest, "lr": 0.01})
    assert opt.param_groups[1]["l1"] == 0.0 and opt.param_groups[1]["lr"] == 0.01
    train_steps(model, opt, 0, 3)
    assert (convs[0] == 0).float().mean() > 0.5  # heavy l1 on the conv weight only
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "lr": -1.0})
    assert len(opt.param_groups) == 2  # the bad group was not added


def test_closure_zero_grad_and_params_without_grad() -> None:
    model = make_model()
    frozen = model[0].bias
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    opt = sparseopt.SqrtTProxSGD(model.parameters(), lr=0.1, l1=1e-3)
    x, y = batch(0)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    assert torch.equal(frozen, before) and frozen not in opt.state
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_lr_scheduler_drives_the_step() -> None:
    model, twin = make_model(), make_model()
    opt = sparseopt.ProxSGD(model.parameters(), lr=0.1, l1=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    ref = sparseopt.ProxSGD(twin.parameters(), lr=0.1, l1=1e-3)
    for t in range(6):
        train_steps(model, opt, t, t + 1)
        sched.step()
        train_steps(twin, ref, t, t + 1)
        ref.param_groups[0]["lr"] = 0.1 * 0.5 ** ((t + 1) // 2)
    assert_same(params_of(model), params_of(twin))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_grad_scaler_unscales_and_skips_inf_steps(name: str) -> None:
    """With GradScaler the result equals unscaled training (power-of-two scale: exact), and a
    step with an inf gradient changes neither parameters nor state."""
    model, twin = make_model(), make_model()
    opt = FACTORIES[name](model.parameters())
    ref = FACTORIES[name](twin.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for t in range(6):
        x, y = batch(t)
        opt.zero_grad()
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
        train_steps(twin, ref, t, t + 1)
    for a, b in zip(params_of(model), params_of(twin)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    before_p, before_s = params_of(model), copy.deepcopy(opt.state_dict()["state"])
    x, y = batch(7)
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y) * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    assert_same(params_of(model), before_p)
    after_s = opt.state_dict()["state"]
    for k, st in before_s.items():
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(after_s[k][key]), torch.as_tensor(v)), (k, key)


@pytest.mark.parametrize("name", ["ProxSGD", "IRDA"])
def test_torch_compile_step_matches_eager(name: str) -> None:
    model, twin = make_model(), make_model()
    opt = FACTORIES[name](model.parameters())
    ref = FACTORIES[name](twin.parameters())
    train_steps(model, opt, 0, 1)  # state exists before compiling
    train_steps(twin, ref, 0, 1)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def compiled_step():
        opt.step()

    for t in range(1, 4):
        x, y = batch(t)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        compiled_step()
        train_steps(twin, ref, t, t + 1)
    assert_same(params_of(model), params_of(twin))


def test_state_is_allocated_once() -> None:
    model = make_model()
    opt = sparseopt.ProxSGD(model.parameters(), lr=0.1, l1=1e-3, momentum=0.9)
    train_steps(model, opt, 0, 1)
    ptrs = {id(p): opt.state[p]["momentum_buffer"].data_ptr() for p in model.parameters()}
    train_steps(model, opt, 1, 4)
    assert ptrs == {id(p): opt.state[p]["momentum_buffer"].data_ptr() for p in model.parameters()}


def test_l1_on_all_covers_biases() -> None:
    bias = nn.Parameter(torch.full((4,), 0.01))
    weight = nn.Parameter(torch.full((4, 4), 0.01))
    for l1_on, expect_bias_zero in (("weights", False), ("all", True)):
        b, w = nn.Parameter(bias.detach().clone()), nn.Parameter(weight.detach().clone())
        opt = sparseopt.ProxSGD([b, w], lr=1.0, l1=0.1, l1_on=l1_on)
        b.grad, w.grad = torch.zeros_like(b), torch.zeros_like(w)
        opt.step()
        assert torch.all(w == 0)
        assert bool(torch.all(b == 0)) == expect_bias_zero

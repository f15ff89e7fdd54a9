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
    "ProxSGD": lambda p, **kw: sparseopt.ProxSGD(p, lr=0.05, l1=1e-2, momentum=0.9, **kw),
    "SqrtTProxSGD": lambda p, **kw: sparseopt.SqrtTProxSGD(p, lr=0.05, l1=1e-3, **kw),
    "RDA": lambda p, **kw: sparseopt.RDA(p, l1=1e-2, gamma=20.0, **kw),
    "IRDA": lambda p, **kw: sparseopt.IRDA(p, l1=1e-2, gamma=20.0, retrain_after=4, **kw),
    "Adam": lambda p, **kw: sparseopt.Adam(p, lr=1e-2, amsgrad=True, **kw),
    "AdamW": lambda p, **kw: sparseopt.AdamW(p, lr=1e-2, l1=1e-2, **kw),
    "OBProxSG": lambda p, **kw: sparseopt.OBProxSG(p, lr=0.05, l1=1e-2, n_p=1, n_o=1,
                                                   steps_per_epoch=2, **kw),
    "OBProxSGPlus": lambda p, **kw: sparseopt.OBProxSGPlus(p, lr=0.05, l1=1e-2, n_p=1,
                                                           steps_per_epoch=2, **kw),
    "PDCA": lambda p, **kw: sparseopt.PDCA(p, lr=0.05, l1=1e-2, theta=5.0, restart=3, **kw),
    "AdaHessian": lambda p, **kw: sparseopt.AdaHessian(p, lr=0.05, seed=0, **kw),
}
NAMES = list(FACTORIES)
FIRST_ORDER = [n for n in NAMES if n != "AdaHessian"]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def backward(model: nn.Module, t: int, name: str, scale: float = 1.0, scaler=None) -> None:
    gen = torch.Generator().manual_seed(t)
    x, y = torch.randn(5, 2, 6, 6, generator=gen), torch.randint(0, 3, (5,), generator=gen)
    device = next(model.parameters()).device
    out = model(x.to(device))
    loss = nn.functional.cross_entropy(out, y.to(out.device)) * scale
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


CUDA_NATIVE = torch.cuda.is_available() and sparseopt.ops.has_native("cuda")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not CUDA_NATIVE, reason="needs a GPU and a CUDA build of sparseopt"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_resume_from_state_dict_is_bit_exact(name: str, device: str) -> None:
    model = make_model().to(device)
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 8)
    unbroken = [p.detach().clone() for p in model.parameters()]

    model = make_model().to(device)
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 4)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    resumed = make_model().to(device)
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


@pytest.mark.parametrize("name", NAMES)
def test_grad_scaler_finite_steps_equal_the_unscaled_run(name: str) -> None:
    """A power-of-two loss scale is exact, so unscaling in the kernels (and AdaHessian's Hz
    unscaling) gives the unscaled run bit for bit."""
    model, twin = make_model(), make_model()
    opt, ref = FACTORIES[name](model.parameters()), FACTORIES[name](twin.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    for t in range(5):
        opt.zero_grad()
        backward(model, t, name, scaler=scaler)
        scaler.step(opt)
        scaler.update()
    train(twin, ref, name, 0, 5)
    assert scaler.get_scale() == 2.0**12  # it grew twice: no step was skipped
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_adahessian_refuses_a_step_after_unscale_before_any_change() -> None:
    model = make_model()
    opt = FACTORIES["AdaHessian"](model.parameters())
    train(model, opt, "AdaHessian", 0, 2)
    snap = snapshot(model, opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    opt.zero_grad()
    backward(model, 5, "AdaHessian", scaler=scaler)
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="unscale_.*before scaler.step"):
        scaler.step(opt)
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("name", NAMES)
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


@pytest.mark.parametrize("name", FIRST_ORDER)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_parameters_step_with_fp32_math(name: str, dtype: torch.dtype) -> None:
    """bf16/fp16 parameters are updated in fp32 and rounded once: a step on them equals the same
    step on fp32 copies, rounded to the low precision (no rounding of intermediates)."""
    low = make_model().to(dtype)
    high = copy.deepcopy(low).float()
    gen = torch.Generator().manual_seed(3)
    for p, q in zip(low.parameters(), high.parameters()):
        p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        q.grad = p.grad.float()
    FACTORIES[name](low.parameters()).step()
    FACTORIES[name](high.parameters()).step()
    for p, q in zip(low.parameters(), high.parameters()):
        assert torch.equal(p.detach(), q.detach().to(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_compiled_step_compiles_once_and_equals_eager(name: str) -> None:
    """New gradient tensors every step (zero_grad sets them to None) must not recompile the
    step; AdaHessian compiles around one deliberate break (its Hessian-vector pass)."""
    compiles = []

    def counting_backend(gm, example_inputs):  # noqa: ANN001, ANN202
        compiles.append(gm)
        return gm.forward

    model, twin = make_model(), make_model()
    opt, ref = FACTORIES[name](model.parameters()), FACTORIES[name](twin.parameters())
    train(model, opt, name, 0, 1)
    train(twin, ref, name, 0, 1)
    torch._dynamo.reset()
    compiled = torch.compile(opt.step, backend=counting_backend, fullgraph=name != "AdaHessian")
    for t in range(1, 7):
        opt.zero_grad()
        backward(model, t, name)
        compiled()
        train(twin, ref, name, t, t + 1)
        if t == 1:
            first = len(compiles)
    assert first >= 1 and len(compiles) == first, f"{len(compiles) - first} recompilations"
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


class _MixedDtypes(nn.Module):
    """fp32 conv, fp64 head, bf16 extra scale: three dtypes in one parameter group."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3)
        self.head = nn.Linear(4 * 4 * 4, 3).double()
        self.scale = nn.Parameter(torch.full((3,), 0.75, dtype=torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).flatten(1).double()
        return self.head(h) * self.scale.double()


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtypes_in_one_group_step_like_one_group_per_dtype(name: str) -> None:
    """Mixed dtypes in a group are accepted (as in torch): one fused call covers them and each
    parameter's update equals the one it gets in a group of its own dtype."""
    model, twin = _MixedDtypes(), _MixedDtypes()
    opt = FACTORIES[name](model.parameters())
    by_dtype: dict[torch.dtype, list] = {}
    for p in twin.parameters():
        by_dtype.setdefault(p.dtype, []).append(p)
    ref = FACTORIES[name]([{"params": ps} for ps in by_dtype.values()])
    train(model, opt, name, 0, 4)
    train(twin, ref, name, 0, 4)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert a.dtype == b.dtype and torch.equal(a, b)


class _MixedDevices(nn.Module):
    """conv on the CPU, head on the GPU: two devices in one parameter group."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3)
        self.head = nn.Linear(4 * 4 * 4, 3).cuda()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x.cpu())).flatten(1).cuda())


@pytest.mark.skipif(not CUDA_NATIVE, reason="needs a GPU and a CUDA build of sparseopt")
@pytest.mark.parametrize("name", NAMES)
def test_mixed_devices_in_one_group_step_like_one_group_per_device(name: str) -> None:
    model, twin = _MixedDevices(), _MixedDevices()
    opt = FACTORIES[name](model.parameters())
    ref = FACTORIES[name]([{"params": twin.conv.parameters()}, {"params": twin.head.parameters()}])
    train(model, opt, name, 0, 4)
    train(twin, ref, name, 0, 4)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)

# -- tensors changed behind the optimizer's back; rejected loads ---------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("change", ["param cast", "grad resized"])
def test_tensor_swapped_through_data_fails_before_any_change(name: str, change: str) -> None:
    """`.data` assignments bypass torch's own checks; the last parameter (a later bucket than
    the conv weight) is the odd one out, so a check made by each bucket's op alone would come
    after the first bucket was written."""
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 2)
    opt.zero_grad()
    backward(model, 3, name)
    last = list(model.parameters())[-1]
    if change == "param cast":
        if not any(isinstance(v, torch.Tensor) and v.dim() > 0 for v in opt.state[last].values()):
            pytest.skip("no per-element state to disagree with")
        last.data = last.data.double()
        last.grad = last.grad.detach().double()
    else:
        last.grad.data = torch.zeros(last.numel() + 2)
    snap = snapshot(model, opt)
    with pytest.raises(RuntimeError, match="must match the parameter"):
        opt.step()
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_compiled_step_with_an_invalid_later_group_changes_nothing(name: str) -> None:
    model = make_model()
    params = list(model.parameters())
    opt = FACTORIES[name]([{"params": params[:2]}, {"params": params[2:]}])
    train(model, opt, name, 0, 1)
    compiled = torch.compile(opt.step, backend="aot_eager")
    opt.zero_grad()
    backward(model, 1, name)
    opt.param_groups[1]["lr"] = float("nan")
    snap = snapshot(model, opt)
    with pytest.raises(ValueError, match="lr = nan"):
        compiled()
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["lr", "state shape", "missing state"])
def test_rejected_load_state_dict_leaves_the_optimizer_as_it_was(name: str, bad: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 2)
    good = opt.state_dict()
    sd = copy.deepcopy(good)
    if bad == "lr":
        sd["param_groups"][0]["lr"] = -5.0
        error, match = ValueError, "lr"
    else:
        key = next((k for k, v in sd["state"][1].items()
                    if isinstance(v, torch.Tensor) and v.dim() > 0
                    and (bad == "state shape" or k not in type(opt)._optional_state)), None)
        if key is None:
            pytest.skip("no per-element state")
        if bad == "state shape":
            sd["state"][1][key] = torch.zeros(7)
            error, match = RuntimeError, "shape"
        else:
            del sd["state"][1][key]
            error, match = ValueError, "lacks"
    before = copy.deepcopy(good)
    with pytest.raises(error, match=match):
        opt.load_state_dict(sd)
    assert _same(opt.state_dict(), before)
    train(model, opt, name, 2, 3)  # and it still steps


def _same(a, b) -> bool:
    """Equality of nested state dicts (tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("name", ["Adam", "RDA", "PDCA"])
def test_state_of_another_optimizer_class_is_refused_clearly(name: str) -> None:
    model = make_model()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, sgd, "SGD", 0, 1)
    opt = FACTORIES[name](model.parameters())
    with pytest.raises(ValueError, match="lacks .* another optimizer class"):
        opt.load_state_dict(sgd.state_dict())


def test_checkpoint_with_a_plain_int_step_loads_and_steps() -> None:
    """torch < 1.12 saved step counters as Python ints."""
    model, twin = make_model(), make_model()
    opt, ref = FACTORIES["Adam"](model.parameters()), FACTORIES["Adam"](twin.parameters())
    train(model, opt, "Adam", 0, 2)
    train(twin, ref, "Adam", 0, 2)
    sd = copy.deepcopy(opt.state_dict())  # (state_dict() shares the live state dicts)
    for st in sd["state"].values():
        st["step"] = int(st["step"])
    ref.load_state_dict(sd)
    train(model, opt, "Adam", 2, 4)
    train(twin, ref, "Adam", 2, 4)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_loaded_state_dict_keeps_this_optimizers_backend(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters(), backend="native")
    train(model, opt, name, 0, 1)
    ref = FACTORIES[name](make_model().parameters(), backend="reference")
    ref.load_state_dict(opt.state_dict())
    assert all(g["backend"] == "reference" for g in ref.param_groups)


@pytest.mark.parametrize("name", NAMES)
def test_step_bumps_parameter_versions_like_an_inplace_op(name: str) -> None:
    """The native kernels write through raw pointers; the versions they bump make autograd
    refuse a graph saved before the step, as it does after torch.optim.SGD."""
    model = make_model()
    opt = FACTORIES[name](model.parameters())
    train(model, opt, name, 0, 1)
    backward(model, 1, name)
    versions = [p._version for p in model.parameters()]
    out = model(torch.randn(2, 2, 6, 6)).sum()
    opt.step()
    assert all(p._version > v for p, v in zip(model.parameters(), versions))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_numpy_scalar_hyperparameters_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    model = make_model()
    opt = sparseopt.ProxSGD(model.parameters(), lr=np.float32(0.05), l1=np.float64(1e-2),
                            momentum=np.float32(0.5))
    train(model, opt, "ProxSGD", 0, 2)


def test_adahessian_grad_scaler_skipped_step_equals_an_omitted_one() -> None:
    """The probe generator and the Hessian-step count are put back on a skipped step."""
    model, twin = make_model(), make_model()
    opt = sparseopt.AdaHessian(model.parameters(), lr=0.05, seed=0, update_each=2)
    ref = sparseopt.AdaHessian(twin.parameters(), lr=0.05, seed=0, update_each=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1000)
    for t in range(5):
        opt.zero_grad()
        backward(model, t, "AdaHessian", scale=float("inf") if t == 2 else 1.0, scaler=scaler)
        scaler.step(opt)
        scaler.update()
        if t != 2:
            ref.zero_grad()
            backward(twin, t, "AdaHessian", scaler=None)
            ref.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert opt.state_dict()["param_groups"][0]["adahessian"]["hessian_steps"] == 4


def test_adahessian_load_restores_update_each_and_n_samples() -> None:
    model = make_model()
    opt = sparseopt.AdaHessian(model.parameters(), lr=0.05, seed=0, update_each=3, n_samples=2)
    train(model, opt, "AdaHessian", 0, 2)
    fresh = sparseopt.AdaHessian(make_model().parameters(), lr=0.05)
    fresh.load_state_dict(opt.state_dict())
    assert (fresh.update_each, fresh.n_samples) == (3, 2)
    sd = opt.state_dict()
    sd["param_groups"][0]["adahessian"]["update_each"] = 0
    with pytest.raises(ValueError, match="update_each"):
        fresh.load_state_dict(sd)
    assert (fresh.update_each, fresh.n_samples) == (3, 2)


# -- opt-in checks: non-finite gradients, capturable -----------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_check_finite_rejects_a_non_finite_gradient_before_any_change(name: str, bad: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters(), check_finite=True)
    train(model, opt, name, 0, 2)  # finite steps pass the check
    snap = snapshot(model, opt)
    opt.zero_grad()
    backward(model, 3, name)
    last = list(model.parameters())[-1]
    with torch.no_grad():
        last.grad.view(-1)[1] = float(bad)
    with pytest.raises(RuntimeError, match=rf"parameter 3 .* has {int(bad == 'nan')} NaN and "
                                           rf"{int(bad == 'inf')} inf values.*no parameter"):
        opt.step()
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("name", NAMES)
def test_check_finite_on_finite_steps_equals_the_unchecked_run(name: str) -> None:
    model, twin = make_model(), make_model()
    train(model, FACTORIES[name](model.parameters(), check_finite=True), name, 0, 4)
    train(twin, FACTORIES[name](twin.parameters()), name, 0, 4)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_check_finite_leaves_grad_scaler_steps_to_the_scaler(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters(), check_finite=True)
    train(model, opt, name, 0, 2)
    snap = snapshot(model, opt)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    opt.zero_grad()
    backward(model, 5, name, scale=float("inf"), scaler=scaler)
    scaler.step(opt)  # no error: the scaler skips the step
    scaler.update()
    assert_unchanged(model, opt, snap)


@pytest.mark.parametrize("name", NAMES)
def test_capturable_and_check_finite_flags_are_validated(name: str) -> None:
    params = make_model().parameters
    for flag in ("capturable", "check_finite"):
        with pytest.raises(ValueError, match=rf"{flag} must be a bool.*accepted"):
            FACTORIES[name](params(), **{flag: 1})


@pytest.mark.parametrize("name", NAMES)
def test_capturable_on_cpu_parameters_fails_before_any_change(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters(), capturable=True)
    snap = snapshot(model, opt)
    opt.zero_grad()
    backward(model, 0, name)
    with pytest.raises(RuntimeError, match="capturable=True is for CUDA graphs.*on cpu"):
        opt.step()
    assert_unchanged(model, opt, snap)
    assert not opt.state  # no state was created either


@pytest.mark.parametrize("name", NAMES)
def test_capturable_and_check_finite_survive_state_dict(name: str) -> None:
    model = make_model()
    opt = FACTORIES[name](model.parameters(), check_finite=True)
    train(model, opt, name, 0, 1)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["check_finite"] is True
    for group in sd["param_groups"]:  # a state dict from before the flags existed
        del group["capturable"], group["check_finite"]
    other = FACTORIES[name](make_model().parameters())
    other.load_state_dict(sd)
    assert other.param_groups[0]["capturable"] is False
    assert other.param_groups[0]["check_finite"] is False


@pytest.mark.skipif(not CUDA_NATIVE,
                    reason="CUDA graphs need a GPU and a CUDA build of sparseopt (none here)")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_graph_of_a_whole_training_step_replays_like_eager(name: str) -> None:
    """Forward, backward and step captured in one CUDA graph (capturable=True) and replayed on
    new batches equal the same steps taken eagerly. AdaHessian's probes come from the default
    CUDA generator when capturable, so both runs reseed it before each step."""
    device = torch.device("cuda")
    model, twin = make_model().to(device), make_model().to(device)
    opt = FACTORIES[name](model.parameters(), capturable=True)
    ref = FACTORIES[name](twin.parameters(), capturable=True)
    create_graph = name == "AdaHessian"
    batches = []
    for t in range(8):
        gen = torch.Generator().manual_seed(t)
        batches.append((torch.randn(5, 2, 6, 6, generator=gen).to(device),
                        torch.randint(0, 3, (5,), generator=gen).to(device)))
    static_x, static_y = (b.clone() for b in batches[0])

    def step(net: nn.Module, o: torch.optim.Optimizer, x, y) -> None:
        o.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(net(x), y).backward(create_graph=create_graph)
        o.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: creates the state and the grads' memory
        for t in range(3):
            torch.cuda.manual_seed(t)
            step(model, opt, *batches[t])
    torch.cuda.current_stream().wait_stream(side)
    for t in range(3):
        torch.cuda.manual_seed(t)
        step(twin, ref, *batches[t])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(model, opt, static_x, static_y)
    for t in range(3, 8):
        static_x.copy_(batches[t][0])
        static_y.copy_(batches[t][1])
        torch.cuda.manual_seed(t)
        graph.replay()
        torch.cuda.manual_seed(t)
        step(twin, ref, *batches[t])
    torch.cuda.synchronize()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(not CUDA_NATIVE,
                    reason="CUDA graphs need a GPU and a CUDA build of sparseopt (none here)")
@pytest.mark.parametrize("name", ["ProxSGD", "Adam"])
def test_cuda_graph_capture_refuses_what_a_graph_cannot_replay(name: str) -> None:
    model = make_model().cuda()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    plain = FACTORIES[name](model.parameters())
    fresh = FACTORIES[name](model.parameters(), capturable=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        plain.step()  # warm-up, so only the flag is wrong below
        checking = FACTORIES[name](model.parameters(), capturable=True, check_finite=True)
        checking.step()
        for opt, match in ((plain, "capturable=False"), (fresh, "warm-up"),
                           (checking, "check_finite=True reads the gradients on the host")):
            with pytest.raises(RuntimeError, match=match):
                with torch.cuda.graph(torch.cuda.CUDAGraph()):
                    opt.step()


# -- layers ---
# The sparse conv layers (sparseopt.nn) in the same bad-input matrix: both layers, in training
# mode (masked dense conv) and compressed (the sparse kernel, and the dense fallback). Every bad
# call must fail with a message naming what was wrong and what is accepted, and leave every
# parameter and buffer (the compressed form included) as it was.
LAYER_KINDS = {
    "pointwise": lambda **kw: sparseopt.nn.SparsePointwiseConv2d(8, 6, stride=2, **kw),
    "depthwise": lambda **kw: sparseopt.nn.SparseDepthwiseConv2d(8, 3, stride=2, padding=1, **kw),
}
LAYER_MODES = {"training": None, "sparse": 1.0, "dense_fallback": 0.0}  # -> dense_threshold
LAYER_CASES = [(k, m) for k in LAYER_KINDS for m in LAYER_MODES]
LAYER_IDS = [f"{k}-{m}" for k, m in LAYER_CASES]
GOOD_INPUT = (2, 8, 7, 9)


def make_layer(kind: str, mode: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    layer = LAYER_KINDS[kind](**kw)
    with torch.no_grad():
        layer.weight.view(-1)[::3] = 0  # pruned
        layer.update_mask()
    if LAYER_MODES[mode] is not None:
        layer.compress(dense_threshold=LAYER_MODES[mode])
        assert layer.kernel == ("sparse" if mode == "sparse" else "dense")
        with torch.no_grad():
            # The compressed form is now stale (rebuilt at the next good call): a bad call that
            # rebuilt it before failing would show up as a changed buffer.
            layer.weight.mul_(2)
    return layer


def layer_snapshot(layer: nn.Module) -> dict:
    tensors = dict(layer.named_parameters())
    tensors.update(layer.named_buffers())  # mask and, when compressed, _ptr/_idx/_values/_dense
    return {
        "tensors": {k: (v, v.detach().clone()) for k, v in tensors.items()},
        "mode": (layer.compressed, layer._dense_threshold, layer._stamp),
    }


def assert_layer_unchanged(layer: nn.Module, snap: dict) -> None:
    now = dict(layer.named_parameters())
    now.update(layer.named_buffers())
    assert now.keys() == snap["tensors"].keys()
    for k, (obj, value) in snap["tensors"].items():
        assert now[k] is obj, f"{k} was replaced"
        assert now[k].dtype == value.dtype and now[k].shape == value.shape, k
        assert torch.equal(now[k].detach(), value), f"{k} changed"
    assert (layer.compressed, layer._dense_threshold, layer._stamp) == snap["mode"]


def assert_still_works(layer: nn.Module) -> None:
    """After the failed call, a good input runs and gives the masked dense convolution."""
    x = torch.randn(GOOD_INPUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = layer(x)
        expected = layer.to_dense()(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def re_shape(shape) -> str:
    """A shape as the messages print it, escaped for a regex: [8, 1, 3, 3]."""
    return r"\[" + ", ".join(str(s) for s in shape) + r"\]"


def layer_name(kind: str) -> str:
    return {"pointwise": "SparsePointwiseConv2d", "depthwise": "SparseDepthwiseConv2d"}[kind]


BAD_INPUTS = {
    "3d_channels_7": (lambda: torch.zeros(7, 7, 9), ValueError,  # unbatched, as nn.Conv2d takes
                      r"expected 8 input channels, got 7 \(input shape \[7, 7, 9\]\)"),
    "5d": (lambda: torch.zeros(2, 8, 7, 9, 1), ValueError,
           r"expected a 4-D input \[N, C, H, W\], got a 5-D tensor of shape \[2, 8, 7, 9, 1\]"),
    "2d": (lambda: torch.zeros(8, 7), ValueError, r"expected a 4-D input .* got a 2-D tensor"),
    "channels_7": (lambda: torch.zeros(2, 7, 7, 9), ValueError,
                   r"expected 8 input channels, got 7 \(input shape \[2, 7, 7, 9\]\)"),
    "channels_16": (lambda: torch.zeros(2, 16, 7, 9), ValueError,
                    r"expected 8 input channels, got 16"),
    "channels_last_dim": (lambda: torch.zeros(2, 7, 9, 8), ValueError,  # NHWC by mistake
                          r"expected 8 input channels, got 7"),
    "float64": (lambda: torch.zeros(GOOD_INPUT, dtype=torch.float64), TypeError,
                r"expected a torch.float32 input \(the weight's dtype\), got torch.float64"),
    "float16": (lambda: torch.zeros(GOOD_INPUT, dtype=torch.float16), TypeError,
                r"expected a torch.float32 input \(the weight's dtype\), got torch.float16"),
    "int64": (lambda: torch.zeros(GOOD_INPUT, dtype=torch.int64), TypeError,
              r"expected a torch.float32 input \(the weight's dtype\), got torch.int64"),
    "uint8": (lambda: torch.zeros(GOOD_INPUT, dtype=torch.uint8), TypeError,
              r"expected a torch.float32 input .* got torch.uint8"),
    "bool": (lambda: torch.zeros(GOOD_INPUT, dtype=torch.bool), TypeError,
             r"expected a torch.float32 input .* got torch.bool"),
    "complex": (lambda: torch.zeros(GOOD_INPUT, dtype=torch.complex64), TypeError,
                r"expected a torch.float32 input .* got torch.complex64"),
    "meta_device": (lambda: torch.zeros(GOOD_INPUT, device="meta"), RuntimeError,
                    r"expected an input on cpu \(the weight's device\), got meta"),
    "empty_map": (lambda: torch.zeros(2, 8, 0, 9), ValueError,
                  r"expected a non-empty H x W map, got an input of shape \[2, 8, 0, 9\]"),
    "numpy": (lambda: torch.zeros(GOOD_INPUT).numpy(), TypeError,
              r"expected a torch.Tensor input, got ndarray"),
    "list": (lambda: [[1.0]], TypeError, r"expected a torch.Tensor input, got list"),
}
if torch.cuda.is_available():
    BAD_INPUTS["cuda_device"] = (lambda: torch.zeros(GOOD_INPUT, device="cuda"), RuntimeError,
                                 r"expected an input on cpu \(the weight's device\), got cuda")


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("kind,mode", LAYER_CASES, ids=LAYER_IDS)
def test_layer_bad_input_fails_clearly_and_changes_nothing(kind: str, mode: str, bad: str) -> None:
    make_input, exc, match = BAD_INPUTS[bad]
    layer = make_layer(kind, mode)
    snap = layer_snapshot(layer)
    x = make_input()
    with pytest.raises(exc, match=rf"{layer_name(kind)}: {match}"):
        layer(x)
    assert_layer_unchanged(layer, snap)
    assert_still_works(layer)


@pytest.mark.parametrize("mode", list(LAYER_MODES))
def test_depthwise_input_smaller_than_the_kernel_fails_clearly(mode: str) -> None:
    torch.manual_seed(0)
    layer = sparseopt.nn.SparseDepthwiseConv2d(8, (5, 3), padding=(1, 0))
    if LAYER_MODES[mode] is not None:
        layer.compress(dense_threshold=LAYER_MODES[mode])
    snap = layer_snapshot(layer)
    with pytest.raises(ValueError, match=r"SparseDepthwiseConv2d: the padded input \(4 x 9\) is "
                                         r"smaller than the kernel \(5 x 3\)"):
        layer(torch.zeros(1, 8, 2, 9))
    assert_layer_unchanged(layer, snap)
    assert layer(torch.zeros(1, 8, 3, 3)).shape == (1, 8, 1, 1)  # exactly the kernel: fine


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_layer_on_meta_device_checks_the_input_device_and_cannot_compress(kind: str) -> None:
    """The reverse direction (layer on another device than the input), and compress() on a
    layer without values: a clear error, and the layer stays in training mode."""
    layer = LAYER_KINDS[kind](device="meta")
    with pytest.raises(RuntimeError, match=rf"{layer_name(kind)}: expected an input on meta "
                                           r"\(the weight's device\), got cpu"):
        layer(torch.zeros(GOOD_INPUT))
    assert layer(torch.zeros(GOOD_INPUT, device="meta")).device.type == "meta"
    with pytest.raises(RuntimeError, match=rf"{layer_name(kind)}: cannot compress a layer on the "
                                           r"meta device .* materialise it first"):
        layer.compress()
    assert not layer.compressed and layer.kernel == "masked_dense"
    assert layer(torch.zeros(GOOD_INPUT, device="meta")).device.type == "meta"


def bad_masks(layer: nn.Module) -> dict:
    shape = tuple(layer.weight.shape)
    return {
        # [kh, kw] / [O, C] would broadcast against the weight: the same mask for every channel
        "broadcastable_shape": (torch.ones(shape[2:] if shape[2] > 1 else shape[:2],
                                           dtype=torch.bool), ValueError),
        "too_many_dims": (torch.ones(*shape, 1, dtype=torch.bool), ValueError),
        "flat": (torch.ones(layer.weight.numel(), dtype=torch.bool), ValueError),
        "float": (torch.ones(shape), TypeError),
        "uint8": (torch.ones(shape, dtype=torch.uint8), TypeError),
        "meta_device": (torch.ones(shape, dtype=torch.bool, device="meta"), RuntimeError),
        "not_a_tensor": ([[True]], TypeError),
        "none": (None, TypeError),
    }


MASK_CASES = ["broadcastable_shape", "too_many_dims", "flat", "float", "uint8", "meta_device",
              "not_a_tensor", "none"]


@pytest.mark.parametrize("bad", MASK_CASES)
@pytest.mark.parametrize("kind,mode", LAYER_CASES, ids=LAYER_IDS)
def test_layer_bad_mask_assigned_is_rejected_and_changes_nothing(kind: str, mode: str,
                                                                 bad: str) -> None:
    layer = make_layer(kind, mode)
    assert set(bad_masks(layer)) == set(MASK_CASES)
    value, exc = bad_masks(layer)[bad]
    snap = layer_snapshot(layer)
    shape = re_shape(layer.weight.shape)
    with pytest.raises(exc, match=rf"{layer_name(kind)}: the mask assigned must be a torch.bool "
                                  rf"tensor of the weight's shape {shape} on cpu, got "):
        layer.mask = value
    assert_layer_unchanged(layer, snap)
    assert_still_works(layer)


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_layer_mask_replaced_behind_setattr_is_caught_at_the_next_call(kind: str) -> None:
    """mask.data = ... bypasses the assignment check; the forward and compress() still refuse
    a mask that would broadcast instead of failing or masking the wrong weights."""
    layer = make_layer(kind, "training")
    layer.mask.data = torch.ones(3, 3, dtype=torch.bool)
    weight = layer.weight.detach().clone()
    for call in (lambda: layer(torch.zeros(GOOD_INPUT)), layer.compress):
        with pytest.raises(ValueError, match=rf"{layer_name(kind)}: mask must be a torch.bool "
                                             r"tensor of the weight's shape .* got a torch.bool "
                                             r"tensor of shape \[3, 3\]"):
            call()
    assert not layer.compressed and torch.equal(layer.weight, weight)


def bad_state_dicts(layer: nn.Module) -> dict:
    """(state_dict, exception match) pairs; each also carries a changed bias and mask, so a
    loader that copied the entries that fit before failing would be caught."""
    sd = layer.state_dict()
    other = {"bias": torch.full_like(sd["bias"], 7.0), "mask": torch.zeros_like(sd["mask"])}
    w = list(sd["weight"].shape)
    wrong_w = [w[0] + 1] + w[1:]
    cases = {
        "weight_shape": (dict(sd, weight=torch.zeros(wrong_w), **other),
                         rf"weight in the state_dict \(weight\) has shape {re_shape(wrong_w)}, "
                         rf"expected {re_shape(w)} \(in_channels=8, out_channels="),
        "weight_transposed": (dict(sd, weight=sd["weight"].transpose(0, 1).clone(), **other),
                              r"weight in the state_dict \(weight\) has shape"),
        "weight_flat": (dict(sd, weight=sd["weight"].flatten(), **other),
                        r"weight in the state_dict \(weight\) has shape"),
        "weight_integer": (dict(sd, weight=sd["weight"].long(), **other),
                           r"weight in the state_dict \(weight\) has dtype torch.int64, "
                           r"expected a floating-point tensor"),
        "bias_shape": (dict(sd, bias=torch.zeros(3), mask=other["mask"]),
                       r"bias in the state_dict \(bias\) has shape \[3\], expected"),
        "mask_shape": (dict(sd, mask=torch.ones(w[:2], dtype=torch.bool), bias=other["bias"]),
                       rf"mask in the state_dict \(mask\) has shape {re_shape(w[:2])}, expected "
                       rf"{re_shape(w)} \(the weight's shape\)"),
        "mask_not_a_tensor": (dict(sd, mask=[1, 0], bias=other["bias"]),
                              r"mask in the state_dict \(mask\) has shape list"),
        "mask_complex": (dict(sd, mask=torch.ones(w, dtype=torch.complex64), bias=other["bias"]),
                         r"mask in the state_dict \(mask\) has dtype torch.complex64; expected "
                         r"bool \(or an integer or floating-point tensor of 0s and 1s\)"),
        "mask_soft": (dict(sd, mask=torch.full(w, 0.5), bias=other["bias"]),
                      r"mask in the state_dict \(mask\) holds values other than 0 and 1"),
        "mask_nan": (dict(sd, mask=torch.full(w, float("nan")), bias=other["bias"]),
                     r"mask in the state_dict \(mask\) holds values other than 0 and 1"),
    }
    return cases


SD_CASES = ["weight_shape", "weight_transposed", "weight_flat", "weight_integer", "bias_shape",
            "mask_shape", "mask_not_a_tensor", "mask_complex", "mask_soft", "mask_nan"]


@pytest.mark.parametrize("bad", SD_CASES)
@pytest.mark.parametrize("kind,mode", LAYER_CASES, ids=LAYER_IDS)
def test_layer_bad_state_dict_is_rejected_before_anything_is_loaded(kind: str, mode: str,
                                                                    bad: str) -> None:
    layer = make_layer(kind, mode)
    assert set(bad_state_dicts(layer)) == set(SD_CASES)
    sd, match = bad_state_dicts(layer)[bad]
    snap = layer_snapshot(layer)
    with pytest.raises(RuntimeError, match=rf"{layer_name(kind)}: {match}"):
        layer.load_state_dict(sd)
    assert_layer_unchanged(layer, snap)
    assert_still_works(layer)


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_layer_state_dict_missing_or_unexpected_keys(kind: str) -> None:
    """Missing and unexpected keys are torch's strict/non-strict business (the layer's loader is
    not told `strict`): strict names them; non-strict loads what fits. Not atomic under strict:
    torch copies the entries present before it reports the missing ones."""
    src = make_layer(kind, "training")
    dst = make_layer(kind, "training", bias=False)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "bias"'):
        dst.load_state_dict(src.state_dict())
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "bias"'):
        make_layer(kind, "training").load_state_dict(dst.state_dict())
    without_mask = {k: v for k, v in src.state_dict().items() if k != "mask"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "mask"'):
        make_layer(kind, "training").load_state_dict(without_mask)
    # strict=False: the bias is skipped, the rest loads (a mask of 0/1 floats is accepted)
    fresh = make_layer(kind, "training", bias=False)
    with torch.no_grad():
        fresh.weight.zero_()
    fresh.update_mask()
    fresh.load_state_dict(dict(src.state_dict(), mask=src.mask.float()), strict=False)
    assert torch.equal(fresh.weight, src.weight) and torch.equal(fresh.mask, src.mask)


@pytest.mark.parametrize("kind", list(LAYER_KINDS))
def test_layer_bad_state_dict_inside_a_model_leaves_the_layer_unchanged(kind: str) -> None:
    model = nn.Sequential(make_layer(kind, "sparse"), nn.ReLU())
    sd = model.state_dict()
    sd["0.weight"] = torch.zeros(3, 3, 3, 3)
    sd["0.bias"] = sd["0.bias"] + 1
    snap = layer_snapshot(model[0])
    with pytest.raises(RuntimeError, match=r"weight in the state_dict \(0\.weight\) has shape "
                                           r"\[3, 3, 3, 3\]"):
        model.load_state_dict(sd)
    assert_layer_unchanged(model[0], snap)


BAD_CONSTRUCTORS = {
    "pw_in_0": (lambda: sparseopt.nn.SparsePointwiseConv2d(0, 4), ValueError,
                r"SparsePointwiseConv2d: in_ch and out_ch must be >= 1 \(ints\), got 0, 4"),
    "pw_out_negative": (lambda: sparseopt.nn.SparsePointwiseConv2d(4, -2), ValueError,
                        r"in_ch and out_ch must be >= 1 \(ints\), got 4, -2"),
    "pw_in_float": (lambda: sparseopt.nn.SparsePointwiseConv2d(2.5, 4), ValueError,
                    r"in_ch and out_ch must be >= 1 \(ints\), got 2.5, 4"),
    "pw_in_str": (lambda: sparseopt.nn.SparsePointwiseConv2d("8", 4), ValueError,
                  r"in_ch and out_ch must be >= 1 \(ints\), got '8', 4"),
    "pw_in_bool": (lambda: sparseopt.nn.SparsePointwiseConv2d(True, 4), ValueError,
                   r"in_ch and out_ch must be >= 1 \(ints\), got True, 4"),
    "pw_stride_0": (lambda: sparseopt.nn.SparsePointwiseConv2d(4, 4, stride=0), ValueError,
                    r"SparsePointwiseConv2d: stride must be an int or a pair of ints, each >= 1; "
                    r"got 0"),
    "pw_stride_negative_pair": (lambda: sparseopt.nn.SparsePointwiseConv2d(4, 4, stride=(1, -1)),
                                ValueError, r"stride must be .* each >= 1; got \(1, -1\)"),
    "pw_stride_triple": (lambda: sparseopt.nn.SparsePointwiseConv2d(4, 4, stride=(1, 1, 1)),
                         ValueError, r"stride must be an int or a pair of ints \(each >= 1\), "
                                     r"got \(1, 1, 1\)"),
    "pw_stride_float": (lambda: sparseopt.nn.SparsePointwiseConv2d(4, 4, stride=1.5),
                        ValueError, r"stride must be an int or a pair of ints .*got 1.5"),
    "pw_dtype_int": (lambda: sparseopt.nn.SparsePointwiseConv2d(4, 4, dtype=torch.int32),
                     ValueError, r"SparsePointwiseConv2d: dtype must be a floating-point dtype "
                                 r"\(float32, float64, float16 or bfloat16\), got torch.int32"),
    "pw_dtype_complex": (lambda: sparseopt.nn.SparsePointwiseConv2d(4, 4, dtype=torch.cfloat),
                         ValueError, r"dtype must be a floating-point dtype .* torch.complex64"),
    "dw_channels_0": (lambda: sparseopt.nn.SparseDepthwiseConv2d(0, 3), ValueError,
                      r"SparseDepthwiseConv2d: channels must be an int >= 1, got 0"),
    "dw_channels_negative": (lambda: sparseopt.nn.SparseDepthwiseConv2d(-4, 3), ValueError,
                             r"channels must be an int >= 1, got -4"),
    "dw_channels_float": (lambda: sparseopt.nn.SparseDepthwiseConv2d(4.0, 3), ValueError,
                          r"channels must be an int >= 1, got 4.0"),
}
_DW_ARGS = (r"SparseDepthwiseConv2d: need kernel_size >= 1, stride >= 1, padding >= 0, each an "
            r"int or a pair of ints; got ")
for _name, _kw, _shown in [
    ("kernel_0", dict(kernel_size=0), r"kernel_size=0, stride=1, padding=0"),
    ("kernel_negative", dict(kernel_size=(3, -1)), r"kernel_size=\(3, -1\)"),
    ("kernel_triple", dict(kernel_size=(3, 3, 3)), r"kernel_size=\(3, 3, 3\)"),
    ("kernel_float", dict(kernel_size=1.5), r"kernel_size=1.5"),
    ("kernel_str", dict(kernel_size="3"), r"kernel_size='3'"),
    ("kernel_empty", dict(kernel_size=()), r"kernel_size=\(\)"),
    ("stride_0", dict(kernel_size=3, stride=0), r"kernel_size=3, stride=0"),
    ("stride_negative", dict(kernel_size=3, stride=-2), r"stride=-2"),
    ("padding_negative", dict(kernel_size=3, padding=-1), r"padding=-1"),
    ("padding_float", dict(kernel_size=3, padding=0.5), r"padding=0.5"),
]:
    BAD_CONSTRUCTORS["dw_" + _name] = (
        lambda kw=_kw: sparseopt.nn.SparseDepthwiseConv2d(4, **kw), ValueError,
        _DW_ARGS + r".*" + _shown)
BAD_CONSTRUCTORS["dw_dtype_int"] = (
    lambda: sparseopt.nn.SparseDepthwiseConv2d(4, 3, dtype=torch.int64), ValueError,
    r"SparseDepthwiseConv2d: dtype must be a floating-point dtype .* got torch.int64")


@pytest.mark.parametrize("bad", list(BAD_CONSTRUCTORS))
def test_layer_bad_constructor_arguments(bad: str) -> None:
    factory, exc, match = BAD_CONSTRUCTORS[bad]
    with pytest.raises(exc, match=match):
        factory()


@pytest.mark.parametrize("kind,mode", LAYER_CASES, ids=LAYER_IDS)
@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan"), "0.5", True])
def test_layer_bad_dense_threshold_changes_nothing(kind: str, mode: str, threshold) -> None:
    layer = make_layer(kind, mode)
    snap = layer_snapshot(layer)
    with pytest.raises(ValueError, match=r"dense_threshold must be in \[0, 1\], got "):
        layer.compress(threshold)
    assert_layer_unchanged(layer, snap)
    assert_still_works(layer)

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
    with pytest.raises(ValueError, match="capturable=True or check_finite=True, not both"):
        FACTORIES[name](params(), capturable=True, check_finite=True)
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
        for opt, match in ((plain, "capturable=False"), (fresh, "warm-up")):
            with pytest.raises(RuntimeError, match=match):
                with torch.cuda.graph(torch.cuda.CUDAGraph()):
                    opt.step()

"""``lr`` as a tensor (torch.optim's contract): the same steps as a float ``lr``, a per-step LR
scheduler under torch.compile without recompiling, and a CUDA graph that replays the new value."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import HAS_CUDA
from torch import nn

import sparseopt
from sparseopt import ops

NATIVE = ops.extension_loaded()
BACKENDS = ["reference"] + (["native"] if NATIVE else [])

# name -> factory(params, lr, **kw); lr is the first schedule value.
FACTORIES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "ProxSGD": lambda p, lr, **kw: sparseopt.ProxSGD(p, lr=lr, l1=1e-2, momentum=0.9, **kw),
    "SqrtTProxSGD": lambda p, lr, **kw: sparseopt.SqrtTProxSGD(p, lr=lr, l1=1e-3, **kw),
    "RDA": lambda p, lr, **kw: sparseopt.RDA(p, l1=1e-2, gamma=20.0, lr=lr, **kw),
    "IRDA": lambda p, lr, **kw: sparseopt.IRDA(p, l1=1e-2, gamma=20.0, retrain_after=4, lr=lr,
                                               **kw),
    "Adam": lambda p, lr, **kw: sparseopt.Adam(p, lr=lr, amsgrad=True, **kw),
    "AdamW": lambda p, lr, **kw: sparseopt.AdamW(p, lr=lr, l1=1e-2, **kw),
    "OBProxSG": lambda p, lr, **kw: sparseopt.OBProxSG(p, lr=lr, l1=1e-2, n_p=1, n_o=1,
                                                       steps_per_epoch=2, **kw),
    "OBProxSGPlus": lambda p, lr, **kw: sparseopt.OBProxSGPlus(p, lr=lr, l1=1e-2, n_p=1,
                                                               steps_per_epoch=2, **kw),
    "PDCA": lambda p, lr, **kw: sparseopt.PDCA(p, lr=lr, l1=1e-2, theta=5.0, restart=3, **kw),
    "AdaHessian": lambda p, lr, **kw: sparseopt.AdaHessian(p, lr=lr, seed=0, **kw),
}
NAMES = list(FACTORIES)
LR = 0.05


def schedule(t: int) -> float:
    return 1.0 / (1 + t)  # a new value at every step


def make_model(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).to(device)  # fmt: skip


def backward(model: nn.Module, t: int, name: str) -> None:
    gen = torch.Generator().manual_seed(t)
    device = next(model.parameters()).device
    x = torch.randn(5, 2, 6, 6, generator=gen).to(device)
    y = torch.randint(0, 3, (5,), generator=gen).to(device)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward(create_graph=name == "AdaHessian")


def assert_same(a: nn.Module, b: nn.Module) -> None:
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr_steps_like_the_float_lr(name: str, backend: str) -> None:
    """float32 and float64 tensors, edited in place between steps (as a scheduler does)."""
    for dtype in (torch.float64, torch.float32):
        model, twin = make_model(), make_model()
        lr = torch.tensor(LR, dtype=dtype)
        opt = FACTORIES[name](model.parameters(), lr, backend=backend)
        ref = FACTORIES[name](twin.parameters(), float(lr), backend=backend)
        for t in range(5):
            for m, o in ((model, opt), (twin, ref)):
                o.zero_grad()
                backward(m, t, name)
                o.step()
            value = torch.tensor(LR * schedule(t + 1), dtype=dtype)
            lr.fill_(value)
            ref.param_groups[0]["lr"] = float(value)
        assert_same(model, twin)
        assert opt.param_groups[0]["lr"] is lr  # the optimizer keeps the caller's tensor


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\(\)`")
@pytest.mark.parametrize("name", [n for n in NAMES if n != "AdaHessian"])
def test_compiled_step_with_a_per_step_scheduler_compiles_once(name: str) -> None:
    """LambdaLR changes a tensor lr in place every step: one compile, equal to eager."""
    compiles = []

    def counting_backend(gm, example_inputs):  # noqa: ANN001, ANN202
        compiles.append(gm)
        return gm.forward

    model, twin = make_model(), make_model()
    opt = FACTORIES[name](model.parameters(), torch.tensor(LR))
    ref = FACTORIES[name](twin.parameters(), torch.tensor(LR))
    torch._dynamo.reset()
    # (Compiled before the scheduler wraps opt.step in a counter that dynamo does not trace.)
    compiled = torch.compile(opt.step, backend=counting_backend, fullgraph=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref, schedule)
    seen = set()
    for t in range(14):
        opt.zero_grad()
        backward(model, t, name)
        # (The first step creates the state, which changes the graph: taken eagerly.)
        compiled() if t > 0 else opt.step()
        sched.step()
        ref.zero_grad()
        backward(twin, t, name)
        ref.step()
        ref_sched.step()
        seen.add(float(opt.param_groups[0]["lr"]))
        if t == 1:
            first = len(compiles)
    assert len(seen) == 14  # a new lr at every step
    assert first == 1 and len(compiles) == first, f"{len(compiles) - first} recompilations"
    assert_same(model, twin)


def test_bad_tensor_lr_is_rejected_before_any_change() -> None:
    p = nn.Parameter(torch.ones(3, 2))
    for bad, match in [(torch.tensor([0.1, 0.2]), "shape \\[2\\]; accepted: .*one element"),
                       (torch.tensor(1), "torch.int64 tensor"),
                       (torch.tensor(-0.1), "invalid lr")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            sparseopt.ProxSGD([p], lr=bad)
    lr = torch.tensor(0.1)
    opt = sparseopt.ProxSGD([p], lr=lr)
    p.grad = torch.ones_like(p)
    lr.fill_(-1.0)  # edited behind the optimizer's back: refused at the step
    with pytest.raises(ValueError, match="invalid lr"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3, 2))


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and a CUDA build of sparseopt")
@pytest.mark.parametrize("name", [n for n in NAMES if n != "AdaHessian"])
def test_cuda_graph_replay_reads_the_new_lr(name: str) -> None:
    """capturable=True with lr a CUDA tensor: each replay uses the tensor's current value."""
    model, twin = make_model("cuda"), make_model("cuda")
    lr = torch.tensor(LR, device="cuda")
    opt = FACTORIES[name](model.parameters(), lr, capturable=True)
    ref = FACTORIES[name](twin.parameters(), LR)
    for m, o in ((model, opt), (twin, ref)):  # eager warm-up: state exists before capture
        o.zero_grad(set_to_none=False)
        backward(m, 0, name)
        o.step()
    grads = [p.grad for p in model.parameters()]
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    for t in range(1, 6):
        value = LR * schedule(t)
        lr.fill_(value)
        ref.param_groups[0]["lr"] = value
        for g, q in zip(grads, twin.parameters()):
            q.grad = None
        backward(twin, t, name)
        for g, q in zip(grads, twin.parameters()):
            g.copy_(q.grad)
        graph.replay()
        ref.step()
    torch.cuda.synchronize()
    assert_same(model, twin)

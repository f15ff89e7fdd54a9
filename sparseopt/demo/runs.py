"""The demo's optimizer line-up: one entry per optimizer, with the settings the demo uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import optim as so
from ..init import irda_model_
from .. import nn as sparse_nn
from ..sparsity import sparsity_report
from .data import Digits
from .train import RunResult, accuracy, ds_convnet, train

BATCH = 32
L1 = 1e-3  # the l1 weight shared by the l1 family, so that sparsities compare (paper, Table 1)


@dataclass(frozen=True)
class Context:
    """What an optimizer factory may need to know about the run."""

    epochs: int
    steps_per_epoch: int


@dataclass(frozen=True)
class Spec:
    label: str
    l1: str
    build: Callable[[nn.Module, Context], torch.optim.Optimizer]
    init: Callable[[nn.Module], None] | None = None
    on_epoch_end: Callable[[int, torch.optim.Optimizer, Context], None] | None = None
    step_fn: Callable[..., Any] | None = None
    eval_context: Callable[[torch.optim.Optimizer], Any] | None = None


def _irda_init(model: nn.Module) -> None:
    irda_model_(model, s=4.0, generator=torch.Generator().manual_seed(0))


def _irda_retrain(epoch: int, opt: torch.optim.Optimizer, ctx: Context) -> None:
    # Step 1 for the first 3/4 of the budget, then iterative retraining (Algorithm 1).
    if epoch + 1 == max(1, (3 * ctx.epochs) // 4):
        opt.start_retraining()  # type: ignore[attr-defined]


OPTIMIZERS: dict[str, Spec] = {
    "sgd": Spec("SGD (torch, momentum 0.9)", "-",
                lambda m, c: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)),
    "adam": Spec("Adam (sparseopt, fused)", "-",
                 lambda m, c: so.Adam(m.parameters(), lr=3e-3)),
    "proxsgd": Spec("Prox-SGD (momentum 0.9)", str(L1),
                    lambda m, c: so.ProxSGD(m.parameters(), lr=0.05, l1=L1, momentum=0.9)),
    "sqrt_t_proxsgd": Spec("sqrt(t)-Prox-SGD", str(L1),
                           lambda m, c: so.SqrtTProxSGD(m.parameters(), lr=0.05, l1=L1,
                                                        gamma=1.0)),
    "rda": Spec("RDA (w0 = init)", str(L1),
                lambda m, c: so.RDA(m.parameters(), l1=L1, gamma=1.0), init=_irda_init),
    "irda": Spec("iRDA (Step 1 + retraining)", str(L1),
                 lambda m, c: so.IRDA(m.parameters(), l1=L1, gamma=1.0), init=_irda_init,
                 on_epoch_end=_irda_retrain),
    "obproxsg": Spec("OBProx-SG (n_p = n_o = 2 epochs)", str(L1),
                     lambda m, c: so.OBProxSG(m.parameters(), lr=0.05, l1=L1, n_p=2, n_o=2,
                                              steps_per_epoch=c.steps_per_epoch)),
    "obproxsg_plus": Spec("OBProx-SG+ (n_p = 1/2 budget)", str(L1),
                          lambda m, c: so.OBProxSGPlus(m.parameters(), lr=0.05, l1=L1,
                                                       n_p=max(1, c.epochs // 2),
                                                       steps_per_epoch=c.steps_per_epoch)),
    "pdca": Spec("pDCA_e (theta = 10)", str(L1),
                 lambda m, c: so.PDCA(m.parameters(), lr=0.05, l1=L1, theta=10.0, restart=200),
                 eval_context=lambda o: o.eval_params()),  # type: ignore[attr-defined]
    "adahessian": Spec("AdaHessian", "-",
                       lambda m, c: so.AdaHessian(m.parameters(), lr=0.05, seed=0),
                       step_fn=lambda m, o, x, y: _second_order_step(m, o, x, y)),
}


def _second_order_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                       y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward(create_graph=True)
    opt.step()


@dataclass
class Run:
    name: str
    label: str
    l1: str
    result: RunResult
    model: nn.Module
    layers: list[dict[str, Any]] = field(default_factory=list)
    inference: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return dict(
            optimizer=self.name, label=self.label, l1=self.l1, accuracy=r.accuracy,
            sparsity=r.sparsity, train_time_s=r.train_time_s, step_time_ms=r.step_time_ms,
            history=r.history, layers=self.layers, inference=self.inference,
        )  # fmt: skip


def run_one(name: str, data: Digits, epochs: int, seed: int, device: str,
            progress: bool = True) -> Run:
    """Train a fresh model with optimizer ``name``; same seed and data order for every name."""
    spec = OPTIMIZERS[name]
    torch.manual_seed(seed)
    model = sparse_nn.sparsify(ds_convnet())
    if spec.init is not None:
        spec.init(model)
    model.to(device)
    ctx = Context(epochs=epochs, steps_per_epoch=len(data.y_train) // BATCH)
    opt = spec.build(model, ctx)
    hook = None
    if spec.on_epoch_end is not None:
        def hook(epoch: int, o: torch.optim.Optimizer) -> None:
            spec.on_epoch_end(epoch, o, ctx)  # type: ignore[misc]
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs * ctx.steps_per_epoch, desc=f"{name:>15}", leave=True,
                       unit="step", dynamic_ncols=True)
        except ImportError:  # pragma: no cover - tqdm comes with the demo extra
            bar = None
    try:
        result = train(model, opt, data, epochs, batch_size=BATCH, seed=seed, on_epoch_end=hook,
                       step_fn=spec.step_fn, progress=bar, eval_context=spec.eval_context)
    finally:
        if bar is not None:
            bar.close()
    if spec.eval_context is not None:  # PDCA: keep the sparse iterate x as the model
        with spec.eval_context(opt):
            final = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(final)
    layers = [
        dict(name=row.name, shape=list(row.shape), sparsity=row.sparsity)
        for row in sparsity_report(model).rows if row.covered
    ]
    return Run(name, spec.label, spec.l1, result, model, layers, time_inference(model, data))


@torch.no_grad()
def time_inference(model: nn.Module, data: Digits, reps: int = 30) -> dict[str, float]:
    """Test-set inference (all test images in one batch): a dense copy and a compressed copy of
    the model timed alternately (so machine noise hits both alike), best of ``reps`` each."""
    import copy
    import time

    model.eval()
    sparse_nn.update_masks(model)
    x = data.x_test
    dense = sparse_nn.decompress(copy.deepcopy(model))
    sparse = sparse_nn.compress(copy.deepcopy(model))
    best = {"dense": float("inf"), "sparse": float("inf")}
    for m in (dense, sparse):
        m(x)  # warm-up
    for _ in range(reps):
        for key, m in (("dense", dense), ("sparse", sparse)):
            t0 = time.perf_counter()
            m(x)
            best[key] = min(best[key], time.perf_counter() - t0)
    acc = accuracy(sparse, x, data.y_test)
    return dict(dense_ms=1e3 * best["dense"], sparse_ms=1e3 * best["sparse"],
                speedup=best["dense"] / best["sparse"], compressed_accuracy=acc)

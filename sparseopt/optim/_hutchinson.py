"""AdaHessian's Hessian pass: Rademacher probes ``z``, Hessian-vector products ``Hz`` by one
``torch.autograd.grad`` over all parameters, and the fused ``hutchinson_diag_`` op that turns
them into the estimate ``D = |z * Hz|`` (averaged over a conv weight's spatial taps and over
the probes)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import ops
from ._distributed import averaged


class Probes:
    """The probe generators: one per device, seeded with ``seed`` (Philox on CUDA), their
    states saved and restored with the optimizer's."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        self._saved: dict[str, Tensor] = {}  # loaded states of generators not made yet

    def generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            saved = self._saved.pop(str(device), None)
            if saved is not None:
                gen.set_state(saved)
            else:
                gen.manual_seed(self.seed)
            self._generators[device] = gen
        return gen

    def rademacher(self, p: Tensor, capturable: bool = False) -> Tensor:
        # A CUDA graph advances only torch's default CUDA generator on replay, so capturable
        # groups draw from it (seeded by torch.manual_seed; its state is not in state_dict()).
        gen = None if capturable else self.generator(p.device)
        z = torch.randint(0, 2, p.shape, generator=gen, device=p.device, dtype=p.dtype)
        return z.mul_(2).sub_(1)

    def states(self) -> dict[str, Tensor]:
        out = dict(self._saved)
        out.update({str(d): g.get_state() for d, g in self._generators.items()})
        return out

    def load(self, seed: int, states: dict[str, Tensor]) -> None:
        self.seed = seed
        self._generators = {}
        self._saved = {k: v.clone() for k, v in states.items()}


def estimate_hessian_diag(
    params: list[Tensor],
    groups: list[dict[str, Any]],
    diags: list[Tensor],
    probes: Probes,
    n_samples: int,
    process_group: Any = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> Tensor | None:
    """Write the Hutchinson estimate of the Hessian diagonal into ``diags[i]`` (the state of
    ``params[i]``, whose param group is ``groups[i]``) from the graphs of the gradients.

    Under ``torch.amp.GradScaler`` (``grad_scale`` given) the graph is that of the scaled
    loss, so every ``Hz`` is ``grad_scale`` times too large: it is unscaled on the device
    and checked for inf/NaN like the gradients. The estimate then goes to temporaries and
    replaces ``diags`` only where the step is not skipped. Returns the step's skip flag
    (GradScaler's ``found_inf`` or non-finite ``Hz``), None without a scaler.
    """
    grads = [p.grad for p in params]
    by_device: dict[tuple[torch.device, str], list[int]] = {}
    for i, (p, group) in enumerate(zip(params, groups)):
        by_device.setdefault((p.device, group["backend"]), []).append(i)
    targets = diags
    skip: Tensor | None = None
    if grad_scale is not None:
        diags = [torch.empty_like(d) for d in diags]
        skip = torch.zeros((), dtype=torch.float32, device=grad_scale.device)
        if found_inf is not None:
            skip += found_inf.to(skip.device)
    # A gradient without a graph does not depend on any parameter (e.g. a bias that enters
    # the loss linearly): its Hessian row and column are zero, so it adds nothing to z^T g
    # and its own Hz is zero (allow_unused + materialize_grads).
    with_graph = [i for i, g in enumerate(grads) if g.grad_fn is not None]
    for k in range(n_samples):
        zs = [probes.rademacher(p, g["capturable"]) for p, g in zip(params, groups)]
        with torch.enable_grad():
            hzs = torch.autograd.grad([grads[i] for i in with_graph], params,
                                      grad_outputs=[zs[i] for i in with_graph],
                                      retain_graph=k < n_samples - 1,
                                      allow_unused=True, materialize_grads=True)  # fmt: skip
        if process_group is not None:
            # H of the global-batch loss is the mean of the ranks' H (equal local batches),
            # and the probes are equal on every rank: the mean of the local Hz is the global
            # Hz. Averaged before |z * Hz|, which is not linear.
            hzs = averaged(list(hzs), process_group)
        if grad_scale is not None:
            skip = _unscale_hz(hzs, by_device, grad_scale, skip)
        for (device, backend), idx in by_device.items():
            fn = ops.resolve("hutchinson_diag_", device, backend)
            fn([diags[i] for i in idx], [zs[i] for i in idx], [hzs[i] for i in idx],
               1.0 / n_samples, k > 0)  # fmt: skip
    if skip is not None:
        for target, new in zip(targets, diags):  # keep the old estimate on a skipped step
            target.copy_(torch.where(skip.to(target.device) > 0, target, new))
    return skip


def _unscale_hz(
    hzs: list[Tensor] | tuple[Tensor, ...],
    by_device: dict[tuple[torch.device, str], list[int]],
    grad_scale: Tensor,
    skip: Tensor,
) -> Tensor:
    """Divide each ``Hz`` by the loss scale in place and fold inf/NaN into ``skip``, on the
    device (GradScaler's own fused check-and-unscale op; no host sync)."""
    inv_scale = grad_scale.double().reciprocal().float()
    for device, idx in {d: i for (d, _), i in by_device.items()}.items():
        flag = torch.zeros((), dtype=torch.float32, device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(
            [hzs[i] for i in idx], flag, inv_scale.to(device)
        )
        skip = skip + flag.to(skip.device)
    return skip

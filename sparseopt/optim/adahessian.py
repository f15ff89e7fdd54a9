"""AdaHessian (Yao et al. 2020): Adam with the Hutchinson estimate of the Hessian diagonal
(docs/algorithms.md section 9)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from . import _distributed
from ._base import Bucket, Params, SparseOptimizer, _capturing, lr_arg, new_step
from ._hutchinson import Probes, estimate_hessian_diag


class AdaHessian(SparseOptimizer):
    r"""AdaHessian: Adam's second moment built from the Hessian diagonal instead of ``g^2``.

    Call ``loss.backward(create_graph=True)`` before :meth:`step`. The step draws Rademacher
    probes ``z`` (``n_samples`` of them), gets ``Hz`` with one ``torch.autograd.grad`` over all
    parameters, and runs two fused ops: ``hutchinson_diag_`` (``D = |z * Hz|``, averaged over
    the spatial taps of 4-D conv weights and over the probes) and ``adahessian_step_``:

    .. math::
        m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) D^2,
        \quad w \leftarrow w - \mathrm{lr}\,\frac{m/(1-\beta_1^t)}
        {(\sqrt{v}/\sqrt{1-\beta_2^t})^k + \epsilon} - \mathrm{lr}\,\mathrm{wd}\,w

    The step then detaches the gradients, which frees the double-backward graph.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (>= 0, default 0.15).
        betas: ``(beta1, beta2)``, each in [0, 1).
        eps: > 0 (default 1e-4).
        weight_decay: decoupled weight decay ``lr * wd * w`` (>= 0).
        hessian_power: ``k`` in (0, 1] (default 1).
        update_each: recompute ``D`` every this many steps and reuse it in between (>= 1); only
            those steps need ``create_graph=True``.
        n_samples: Rademacher probes averaged per estimate (>= 1).
        seed: seed of the probes' generator (one per device; Philox on CUDA). ``None`` draws
            it from torch's global generator, so ``torch.manual_seed`` makes runs repeatable.
            The generator state is part of ``state_dict()``. With ``capturable=True`` the probes
            come from torch's default CUDA generator instead (the one a CUDA graph advances on
            replay), so ``seed`` is unused and ``torch.cuda.get_rng_state()`` belongs in the
            checkpoint; ``update_each`` must then be 1.
        backend: ``"auto"``, ``"native"`` or ``"reference"``.
        capturable, check_finite: CUDA-graph capture checks; raise on inf/NaN gradients
            (see :class:`~sparseopt.optim.SparseOptimizer`).
        process_group: data parallelism (e.g. ``torch.distributed.group.WORLD``; default None:
            no communication). Every step averages the gradients, and every Hessian step each
            ``Hz``, over the group before using them, so the ranks stay identical and match one
            process on the global batch (the probes ``z`` are the same everywhere: the seed is
            taken from the group's first rank). DDP cannot reduce gradients that carry a graph
            (its reducer fails in ``backward(create_graph=True)``), so run the forward and
            backward of a DDP-wrapped model under ``ddp.no_sync()`` and let AdaHessian do the
            averaging (or do not wrap the model at all). Every rank must have gradients for the
            same parameters (no per-rank unused parameters). Not with GradScaler. FSDP2 (DTensor
            parameters) is not supported: it reduce-scatters the gradients without their graph.

    With ``torch.amp.GradScaler`` (``scaler.scale(loss).backward(create_graph=True)``, then
    ``scaler.step(opt)``) the Hessian-vector products of the scaled loss are unscaled on the
    device, and a step whose gradients or ``Hz`` hold inf/NaN changes nothing (the scaler backs
    off only for inf/NaN gradients, as it sees only those).
    """

    op_name = "adahessian_step_"
    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Params,
        lr: float = 0.15,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        weight_decay: float = 0.0,
        hessian_power: float = 1.0,
        update_each: int = 1,
        n_samples: int = 1,
        seed: int | None = None,
        *,
        backend: str = "auto",
        capturable: bool = False,
        check_finite: bool = False,
        process_group: Any = None,
    ) -> None:
        _check_counts(update_each, n_samples, seed, capturable)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, hessian_power=hessian_power,
            l1_on="weights", backend=backend, capturable=capturable, check_finite=check_finite,
        )  # fmt: skip
        super().__init__(params, defaults)
        self.update_each = update_each
        self.n_samples = n_samples
        seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed
        self.process_group = _distributed.check_process_group(self._owner, process_group)
        if process_group is not None:
            seed = _distributed.broadcast_seed(seed, process_group)
        self._probes = Probes(seed)
        self._hessian_steps = 0

    @property
    def seed(self) -> int:
        """The seed of the probe generators."""
        return self._probes.seed

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = new_step(param)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_hessian_diag_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["hessian_diag"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    # -- data parallelism ---------------------------------------------------------------------
    def _finite_check_groups(self, grads: list[Tensor]) -> list[Any]:
        # check_finite runs on each rank's own gradients, before the averaging: agree first.
        groups = super()._finite_check_groups(grads)
        return groups if self.process_group is None else [*groups, self.process_group]

    def _check_distributed(
        self, params: list[Tensor], grad_scale: Tensor | None, found_inf: Tensor | None
    ) -> None:
        """Refuse the distributed setups this step cannot serve, before anything is written."""
        if _distributed.has_dtensor(params):
            raise RuntimeError(
                "AdaHessian does not support FSDP2 (fully_shard) or other DTensor parameters: "
                "FSDP2 reduce-scatters the gradients without their autograd graph, so no "
                "Hessian-vector product can be taken (nothing was changed). For data "
                "parallelism wrap the model in DDP, run its forward and "
                "backward(create_graph=True) under ddp.no_sync(), and pass "
                "process_group=torch.distributed.group.WORLD to AdaHessian."
            )
        if self.process_group is None:
            world = _distributed.world_size()
            if world > 1:
                warnings.warn(
                    f"AdaHessian: torch.distributed runs {world} processes but process_group is "
                    "None, so each process steps with its own gradients and Hessian estimate. "
                    "For data parallelism pass process_group=torch.distributed.group.WORLD (and "
                    "run a DDP model's forward and backward under ddp.no_sync(): DDP cannot "
                    "reduce gradients that carry a graph).",
                    stacklevel=4,
                )
            return
        if grad_scale is not None or found_inf is not None:
            raise RuntimeError(
                "AdaHessian: process_group= is not supported with torch.amp.GradScaler: the "
                "scaler checks each process's local gradients for inf/NaN, so the processes "
                "could skip different steps and their loss scales would drift apart (nothing "
                "was changed); accepted: bf16 autocast without a scaler, or no process_group"
            )

    def _is_state_init_step(self, params: list[Tensor]) -> bool:
        """Whether this is the step torch.distributed.checkpoint's ``get_state_dict`` takes to
        create a fresh optimizer's state: every ``lr`` 0 and every gradient zero (no graph).
        It moves nothing, so there is no Hessian to estimate (the loaded state replaces what
        it creates)."""
        return all(g["lr"] == 0 for g in self.param_groups) and not any(
            bool(p.grad.any()) for p in params
        )

    # -- the step: the base class's one path, with the Hessian pass before the ops ------------
    # Dynamo cannot trace tensors that carry a grad_fn (the gradients of backward(create_graph=
    # True)), so under torch.compile the checks on them and the Hessian pass run eagerly: two
    # deliberate graph breaks; the other checks and the fused update compile.
    @torch.compiler.disable
    def _preflight(self, buckets: list[Bucket]) -> None:
        super()._preflight(buckets)
        if self.update_each != 1 and _capturing():
            raise RuntimeError(
                f"AdaHessian: update_each={self.update_each} is counted on the host, so a CUDA "
                "graph would replay one branch for ever; capture with update_each=1"
            )
        params = [p for b in buckets for p in b.params]
        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        found_inf: Tensor | None = getattr(self, "found_inf", None)
        self._check_distributed(params, grad_scale, found_inf)
        if self._hessian_steps % self.update_each != 0 or not params:
            return
        if grad_scale is None and found_inf is not None:
            raise RuntimeError(
                "AdaHessian: scaler.unscale_(opt) was called before scaler.step(opt). The "
                "Hessian-vector products come from the scaled loss, and after unscale_ the "
                "optimizer is no longer given the scale to undo; accepted: scaler.step(opt) "
                "without a prior unscale_ (clipping between unscale_ and step is not "
                "supported with AdaHessian)"
            )
        if all(p.grad.grad_fn is None for p in params) and not self._is_state_init_step(params):
            raise RuntimeError(
                "AdaHessian.step() needs the graph of the gradients to compute "
                f"Hessian-vector products, but none of the {len(params)} gradients has "
                "one. Call loss.backward(create_graph=True) before opt.step() (and the "
                "same inside a closure)."
            )

    @torch.compiler.disable
    def _before_ops(self, buckets: list[Bucket], found_inf: Tensor | None) -> Tensor | None:
        """Refresh ``hessian_diag`` when due and detach the gradients; returns the skip flag
        for the update (``found_inf``, or the Hessian pass's flag under GradScaler)."""
        # The probes are drawn in param_groups order, whatever the buckets' order.
        pairs = [(p, s, b.group) for b in buckets for p, s in zip(b.params, b.states)]
        order = {id(p): k for k, p in enumerate(p for g in self.param_groups for p in g["params"])}
        pairs.sort(key=lambda t: order[id(t[0])])
        params = [p for p, _, _ in pairs]
        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        # A step GradScaler skips must equal an omitted one, so the probe generators and the
        # Hessian-step count are put back when it turns out skipped: one host sync per step,
        # only under GradScaler (and not while capturing a CUDA graph, which cannot sync).
        undo = None
        if grad_scale is not None and params and not _capturing():
            undo = (self._hessian_steps, {d: self._probes.generator(d).get_state()
                                          for d in {p.device for p in params}})  # fmt: skip
        if (self._hessian_steps % self.update_each == 0 and params
                and any(p.grad.grad_fn is not None for p in params)):  # fmt: skip
            skip = estimate_hessian_diag(
                params, [g for _, _, g in pairs], [s["hessian_diag"] for _, s, _ in pairs],
                self._probes, self.n_samples, self.process_group, grad_scale, found_inf,
            )  # fmt: skip
            if skip is not None:
                found_inf = skip
        self._hessian_steps += 1
        if undo is not None and found_inf is not None and bool(found_inf):
            self._hessian_steps = undo[0]
            for device, gen_state in undo[1].items():
                self._probes.generator(device).set_state(gen_state)
        for p in params:  # free the double-backward graph
            p.grad = p.grad.detach()
        if self.process_group is not None:
            for p, g in zip(params, _distributed.averaged([p.grad for p in params],
                                                          self.process_group)):  # fmt: skip
                p.grad = g
        for b in buckets:  # the ops update with the detached (averaged) gradients
            b.grads[:] = [p.grad for p in b.params]
        return found_inf

    def _op_args(self, group: dict[str, Any], b: Bucket) -> list[Any]:
        beta1, beta2 = group["betas"]
        return [
            [s["exp_avg"] for s in b.states],
            [s["exp_hessian_diag_sq"] for s in b.states],
            [s["hessian_diag"] for s in b.states],
            [s["step"] for s in b.states],
            lr_arg(group["lr"]),
            float(beta1),
            float(beta2),
            float(group["eps"]),
            float(group["weight_decay"]),
            float(group["hessian_power"]),
        ]

    # -- checkpointing: the probe generator and the Hessian-step count -----------------------
    def state_dict(self) -> dict[str, Any]:
        """The usual ``state`` and ``param_groups``; AdaHessian's own entries (seed, Hessian-step
        count, probe generator states) go under the key ``"adahessian"`` of the first param
        group, since torch.distributed.checkpoint's ``get_state_dict``/``set_state_dict`` keep
        nothing else. Every device's generator is included (a freshly seeded one where no probe
        was drawn yet), so a fresh optimizer's state dict, the template that ``dcp.load`` fills,
        has the same entries."""
        sd = super().state_dict()
        for group in self.param_groups:
            for p in group["params"]:
                self._probes.generator(p.device)
        states = self._probes.states()
        extra = dict(seed=self.seed, hessian_steps=self._hessian_steps,
                     update_each=self.update_each, n_samples=self.n_samples,
                     generator_states=states)
        sd["param_groups"][0] = dict(sd["param_groups"][0], adahessian=extra)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("adahessian", None)  # where state dicts of earlier versions kept it
        groups = state_dict.get("param_groups")
        if groups and isinstance(groups[0], dict) and "adahessian" in groups[0]:
            groups = [dict(g) for g in groups]
            extra = groups[0].pop("adahessian")
            state_dict["param_groups"] = groups
        if extra is not None:  # checked before anything is loaded
            _check_counts(extra.get("update_each", self.update_each),
                          extra.get("n_samples", self.n_samples), extra["seed"],
                          any(g.get("capturable", False) for g in groups or ()))  # fmt: skip
        super().load_state_dict(state_dict)
        if extra is not None:
            # Like every hyperparameter, the checkpoint's update_each and n_samples win (state
            # dicts before they were saved keep the constructor's).
            self.update_each = extra.get("update_each", self.update_each)
            self.n_samples = extra.get("n_samples", self.n_samples)
            self._hessian_steps = extra["hessian_steps"]
            self._probes.load(extra["seed"], extra["generator_states"])


def _check_counts(update_each: Any, n_samples: Any, seed: Any, capturable: bool) -> None:
    for name, value in (("update_each", update_each), ("n_samples", n_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"AdaHessian: invalid {name} = {value!r}; accepted: an int >= 1")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"AdaHessian: invalid seed = {seed!r}; accepted: None or an int")
    if capturable and update_each != 1:
        raise ValueError(
            f"AdaHessian: update_each={update_each} is counted on the host, which a CUDA graph "
            "cannot replay; accepted with capturable=True: update_each=1"
        )

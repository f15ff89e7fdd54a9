"""Machinery shared by sparseopt's optimizers.

A sparseopt optimizer is a thin :class:`torch.optim.Optimizer` subclass: it validates its
hyperparameters (at construction, in ``add_param_group``, after ``load_state_dict`` and at every
step, since schedulers and users edit groups), gathers the parameters that have gradients, their
state and the group's scalars, and calls one fused op per device (and per l1 coverage). All
checks of a step run before the first tensor is written, so a rejected step changes nothing.

``torch.amp.GradScaler`` support follows torch's fused optimizers: the class sets
``_step_supports_amp_scaling``, GradScaler then hands ``grad_scale`` and ``found_inf`` to the
optimizer as attributes, and the kernels unscale the gradients and skip the step on inf/NaN
without a host synchronisation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import ops
from .._domains import HYPER, Real
from ._distributed import any_rank, has_dtensor, local, mesh_groups, on_local_shards

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
BACKENDS = ("auto", "native", "reference")
L1_ON = ("weights", "all")


Params = Iterable[Tensor] | Iterable[dict[str, Any]]


class Bucket(NamedTuple):
    """The parameters of one group that one op call updates: they share a device and l1
    coverage; ``grads[k]`` and ``states[k]`` belong to ``params[k]``."""

    group: dict[str, Any]
    gi: int  # the group's index in param_groups (for error messages)
    device: torch.device
    covered: bool  # the l1 term applies to them (l1_covers)
    fn: Callable[..., Any]  # the op that updates them (ops.resolve)
    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict[str, Any]]


def check_real(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    low_inclusive: bool = True,
    high: float | None = None,
    high_inclusive: bool = False,
) -> None:
    """Raise ValueError unless ``value`` is a finite real number inside the given range."""
    parts = []
    if low is not None:
        parts.append(f"{name} {'>=' if low_inclusive else '>'} {low}")
    if high is not None:
        parts.append(f"{name} {'<=' if high_inclusive else '<'} {high}")
    accepted = "a finite real number" + (" with " + " and ".join(parts) if parts else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars too
        if isinstance(value, Tensor):
            raise ValueError(
                f"{owner}: {name} must be a Python number, got a Tensor (only lr may be one); "
                f"accepted: {accepted}"
            )
        raise ValueError(f"{owner}: {name} = {value!r} is not a number; accepted: {accepted}")
    # (not math.isfinite: under torch.compile a float that changed between calls becomes
    # symbolic, which comparisons accept and math functions do not)
    ok = value - value == 0
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        raise ValueError(f"{owner}: invalid {name} = {value!r}; accepted: {accepted}")


def required(owner: str, name: str, value: Any, example: str) -> None:
    """Raise ValueError when a hyperparameter without a default was not given."""
    if value is None:
        raise ValueError(f"{owner}: {name} is required; e.g. {example}")


def check_lr(owner: str, lr: Any, domain: Real) -> None:
    """``lr`` is a real number, or (as in torch.optim) a tensor with one floating-point element,
    which a scheduler may change in place without a new trace under torch.compile or a
    re-capture of a CUDA graph. A tensor's value is checked where reading it costs nothing (on
    the CPU, outside torch.compile); on a GPU the kernels read it (as in torch.optim)."""
    if not isinstance(lr, Tensor):
        check_real(owner, "lr", lr, **domain.bounds())
        return
    if lr.layout != torch.strided or lr.numel() != 1 or not lr.is_floating_point():
        raise ValueError(
            f"{owner}: invalid lr, a {lr.dtype} tensor of shape {list(lr.shape)}; accepted: a "
            "finite real number >= 0, or a real floating-point tensor with one element"
        )
    if lr.device.type == "cpu" and not torch.compiler.is_compiling():
        check_real(owner, "lr", float(lr), **domain.bounds())


def lr_arg(lr: float | Tensor) -> float | Tensor:
    """``lr`` as the ops take it: a float, or the tensor itself (their ``.tensor_lr`` overload)."""
    return lr if isinstance(lr, Tensor) else float(lr)


def check_betas(owner: str, betas: Any) -> None:
    """Raise ValueError unless ``betas`` is a pair ``(beta1, beta2)``, each in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    check_real(owner, "betas[0]", betas[0], **HYPER["adam_step_"]["beta1"].bounds())
    check_real(owner, "betas[1]", betas[1], **HYPER["adam_step_"]["beta2"].bounds())


def check_choice(owner: str, name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{owner}: invalid {name} = {value!r}; accepted: one of {choices}")


def l1_covers(param: Tensor, l1_on: str) -> bool:
    """Whether the l1 term applies to ``param``: weights (dim > 1) by default, or everything."""
    return l1_on == "all" or param.dim() > 1


class SparseOptimizer(Optimizer):
    """Base class of sparseopt's optimizers (not used directly).

    Two keyword arguments every optimizer takes (stored per parameter group):
    
    * ``capturable`` (default False): the step may be captured in a CUDA graph. sparseopt's steps
      keep their counters and schedules on the device and never synchronise with the host whatever
      the flag; ``capturable=True`` is the promise torch's optimizers ask for, and makes
      :meth:`SparseOptimizer.step` check what a graph needs: CUDA parameters, and state that exists
      before capture (take one eager warm-up step first), since tensors created during capture
      would be re-zeroed on every replay. A step captured with ``capturable=False`` is refused,
      as in torch. Float hyperparameters are read when the graph is captured: re-capture after
      changing one, or give ``lr`` as a CUDA tensor, which every replay reads.
    * ``check_finite`` (default False): before anything is written, raise if a gradient holds inf
      or NaN, naming the parameter. It costs one reduction and one host synchronisation per step
      and device, so a step that checks cannot be captured in a CUDA graph (refused with an
      error) nor compiled with ``fullgraph=True``; it is skipped on steps that
      ``torch.amp.GradScaler`` drives, since the scaler already skips steps with inf/NaN
      gradients.

    ``lr`` may be a float or, as in torch.optim, a tensor with one element (e.g.
    ``torch.tensor(0.1)``): a scheduler that updates it in place (torch's LR schedulers do)
    changes the step without recompiling a ``torch.compile``d step, and a CUDA graph replays
    with the tensor's current value (keep it on the parameters' device for that).

    Subclasses set :attr:`op_name` (a row of the op table, ``sparseopt.ops.SPECS``), and
    implement :meth:`_init_state` and :meth:`_op_args`; :meth:`_check_hyperparameters` checks
    the op's hyperparameter domains and may be extended.
    """

    op_name: str = ""
    _step_supports_amp_scaling = True
    # Hyperparameters without a default (None until given), and how a call looks, for the error.
    _required: tuple[str, ...] = ()
    _example: str = "{owner}(model.parameters(), lr=0.1)"

    # -- subclass interface ---------------------------------------------------------------
    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        """The group's hyperparameters against the domains of the op's arguments of the same
        name (sparseopt/_domains.py; ``betas`` as the pair of ``beta1``, ``beta2``)."""
        owner = self._owner
        for name in self._required:
            required(owner, name, group[name], self._example.format(owner=owner))
        if "betas" in group:
            check_betas(owner, group["betas"])
        for name, domain in HYPER[self.op_name].items():
            if name == "lr":
                check_lr(owner, group["lr"], domain)
            elif name in group:
                check_real(owner, name, group[name], **domain.bounds())

    def _init_state(self, param: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _op_args(self, group: dict[str, Any], b: Bucket) -> list[Any]:
        """The op's arguments between ``(params, grads)`` and ``(grad_scale, found_inf)`` for
        one bucket of ``group``: state lists and the group's scalars."""
        raise NotImplementedError

    # -- validation -----------------------------------------------------------------------
    @property
    def _owner(self) -> str:
        return type(self).__name__

    def _label(self, group: dict[str, Any], gi: int, i: int, p: Tensor) -> str:
        names = group.get("param_names")
        if names is not None and i < len(names):
            return f"parameter '{names[i]}' (param_groups[{gi}], shape {list(p.shape)})"
        return f"parameter {i} of param_groups[{gi}] (shape {list(p.shape)})"

    def _check_group(self, group: dict[str, Any], gi: int, params: bool = True) -> None:
        owner = self._owner
        check_choice(owner, "backend", group.get("backend"), BACKENDS)
        check_choice(owner, "l1_on", group.get("l1_on"), L1_ON)
        for flag in ("capturable", "check_finite"):
            if not isinstance(group.get(flag), bool):
                raise ValueError(
                    f"{owner}: {flag} must be a bool, got {group.get(flag)!r}; accepted: True or "
                    "False"
                )
        for i, p in enumerate(group["params"] if params else ()):
            if p.dtype not in SUPPORTED_DTYPES:
                kind = "complex" if p.is_complex() else "unsupported"
                raise ValueError(
                    f"{owner}: {self._label(group, gi, i, p)} has {kind} dtype {p.dtype}; "
                    "accepted: float32, float64, float16 or bfloat16 parameters"
                )
        self._check_hyperparameters(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1], len(self.param_groups) - 1)
        except Exception:
            self.param_groups.pop()
            raise

    def _grad_error(self, group: dict[str, Any], gi: int, i: int, p: Tensor) -> Exception:
        g = p.grad
        owner = self._owner
        if g.layout != torch.strided:
            return RuntimeError(
                f"{owner}: {self._label(group, gi, i, p)} has a sparse gradient ({g.layout}); "
                f"{owner} supports dense gradients only"
            )
        return RuntimeError(
            f"{owner}: the gradient of {self._label(group, gi, i, p)} has dtype {g.dtype}, "
            f"shape {list(g.shape)} on {g.device}; it must match the parameter "
            f"({p.dtype}, {list(p.shape)} on {p.device})"
        )

    def _state_error(
        self, group: dict[str, Any], gi: int, i: int, p: Tensor, key: str, value: Tensor
    ) -> Exception:
        where = self._label(group, gi, i, p)
        if value.device != p.device:
            return RuntimeError(
                f"{self._owner}: optimizer state '{key}' of {where} is on {value.device} but the "
                f"parameter is on {p.device}. Move the model before creating the optimizer, or "
                "reload the optimizer's state_dict after moving it (load_state_dict moves each "
                "state tensor to its parameter's device)."
            )
        return RuntimeError(
            f"{self._owner}: optimizer state '{key}' of {where} has dtype {value.dtype} and shape "
            f"{list(value.shape)}; it must match the parameter ({p.dtype}, {list(p.shape)})"
        )

    def _check_state(self, group: dict[str, Any], gi: int, i: int, p: Tensor, state: dict) -> None:
        for key, value in state.items():
            if isinstance(value, Tensor):
                if value.device != p.device or (
                    key != "step" and (value.dtype != p.dtype or value.shape != p.shape)
                ):
                    raise self._state_error(group, gi, i, p, key, value)

    # -- the step ---------------------------------------------------------------------------
    # One path: _buckets() gathers the work, _preflight() checks all of it, the missing state is
    # created, _before_ops() runs what a subclass must do first (AdaHessian's Hessian pass), and
    # _run_ops() calls one op per bucket. Nothing is written before _preflight() has passed.
    # (Written out in step() itself: a graph break that a subclass's hook makes, e.g. a
    # torch.compiler.disable'd Hessian pass, then splits this frame, whose remainder compiles; a
    # break inside a nested call would leave that whole call eager.)
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: optional; re-evaluates the model and returns the loss (run with grad
                enabled, before the update).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        buckets = self._buckets()
        self._preflight(buckets)
        self._create_state(buckets)
        found_inf = self._before_ops(buckets, getattr(self, "found_inf", None))
        self._run_ops(buckets, found_inf)
        return loss

    def _create_state(self, buckets: list[Bucket]) -> None:
        """The one place state is created: after every check has passed."""
        for b in buckets:
            for k, state in enumerate(b.states):
                if not state:
                    state = b.states[k] = self.state[b.params[k]]
                    self._init_state(b.params[k], state, b.group)

    def _run_ops(self, buckets: list[Bucket], found_inf: Tensor | None) -> None:
        """One op call per bucket; ``found_inf`` nonzero skips the step on the device."""
        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        for b in buckets:
            fn = on_local_shards(b.fn) if has_dtensor(b.params) else b.fn
            fn(b.params, b.grads, *self._op_args(b.group, b), _on_device(grad_scale, b.device),
               _on_device(found_inf, b.device))  # fmt: skip

    def _buckets(self) -> list[Bucket]:
        """The parameters with gradients, grouped by (group, device, l1 coverage); reads
        everything and writes nothing. ``states[k]`` is None (or empty) where a parameter has no
        state yet."""
        out: list[Bucket] = []
        gi = -1  # (not enumerate(self.param_groups): dynamo then guards on each .grad's identity)
        for group in self.param_groups:
            gi += 1
            by_key: dict[tuple[torch.device, bool], Bucket] = {}
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                # Read the state only now: under torch.compile, the first path by which dynamo
                # reaches a parameter becomes its guard source, and a source through the keys of
                # self.state makes it guard on the identity of .grad (a recompile per step).
                state = self.state.get(p)
                key = (p.device, l1_covers(p, group["l1_on"]))
                b = by_key.get(key)
                if b is None:
                    fn = ops.resolve(self.op_name, p.device, group["backend"])
                    b = by_key[key] = Bucket(group, gi, key[0], key[1], fn, [], [], [])
                b.params.append(p)
                b.grads.append(g)
                b.states.append(state)
            out.extend(by_key.values())
        return out

    def _preflight(self, buckets: list[Bucket]) -> None:
        """Every check of the step, before anything is written: the groups' hyperparameters,
        what a CUDA graph needs, every gradient and state tensor against its parameter (one
        native pass over the metadata), and ``check_finite``."""
        compiling = torch.compiler.is_compiling()
        capturing = not compiling and _capturing()
        gi = -1
        for group in self.param_groups:
            gi += 1
            if capturing and not group["capturable"]:
                raise RuntimeError(
                    f"{self._owner}: step() is being captured in a CUDA graph but "
                    f"param_groups[{gi}] has capturable=False; construct the optimizer with "
                    "capturable=True (and take one eager step before capturing)"
                )
            # (Under torch.compile the hyperparameters are constants of the graph: dynamo folds
            # these checks away at trace time and re-runs them when a value changes.)
            self._check_group(group, gi, params=False)
        like_params: list[Tensor] = []  # the pre-flight check: likes[k] must match like_params[k]
        likes: list[Tensor] = []
        for b in buckets:
            # (torch.compile marks every group capturable while tracing: not a graph.)
            if b.group["capturable"] and b.device.type != "cuda" and not compiling:
                p = b.params[0]
                raise RuntimeError(
                    f"{self._owner}: capturable=True is for CUDA graphs, but "
                    f"{self._label(b.group, b.gi, _index(b.group['params'], p), p)} is on "
                    f"{b.device}; accepted: CUDA parameters, or capturable=False"
                )
            for p, state in zip(b.params, b.states):
                if capturing and not state:
                    where = self._label(b.group, b.gi, _index(b.group["params"], p), p)
                    raise RuntimeError(
                        f"{self._owner}: {where} has no optimizer state yet, and state created "
                        "inside a CUDA graph would be reset on every replay; take one eager "
                        "step() (a warm-up) before capturing"
                    )
                if not state:
                    continue
                # State tensors are created, loaded (load_state_dict checks them all) and moved
                # together: the first that is not the step counter tells whether the parameter
                # was moved, cast or resized after the optimizer was built (a state of step
                # counters alone can only have moved).
                for key, value in state.items():
                    if key != "step" and isinstance(value, Tensor):
                        like_params.append(p)
                        likes.append(value)
                        break
                else:
                    step = state.get("step")
                    if isinstance(step, Tensor) and step.device != p.device:
                        self._check_state(b.group, b.gi, _index(b.group["params"], p), p, state)
        # torch checks .grad's shape, dtype and device on assignment, but not when either side
        # is swapped through `.data` (model.double() after building the optimizer, pruning code
        # resizing weights), and the layout is ours to check (sparse embeddings). Each bucket's
        # op checks its own tensors too, but only a check of all of them before the first op
        # runs leaves everything unchanged on a mismatch. One native pass over the metadata in
        # eager mode; under torch.compile the Python checks cost nothing at run time (dynamo
        # evaluates them while tracing and guards on the metadata anyway).
        for b in buckets:
            like_params += b.params
            likes += b.grads
        if compiling or ops.first_mismatch(like_params, likes) >= 0:
            self._check_tensors(buckets)
        self._check_finite(buckets)

    def _before_ops(self, buckets: list[Bucket], found_inf: Tensor | None) -> Tensor | None:
        """Runs after the checks and the state creation, before the ops; returns the skip flag
        the ops get (GradScaler's ``found_inf``). A hook for what a step must do first."""
        return found_inf

    def _check_tensors(self, buckets: list[Bucket]) -> None:
        """Raise for the first gradient or state tensor that does not match its parameter."""
        for b in buckets:
            for p, g, state in zip(b.params, b.grads, b.states):
                if ops.mismatched(p, g):
                    raise self._grad_error(b.group, b.gi, _index(b.group["params"], p), p)
                if state:
                    self._check_state(b.group, b.gi, _index(b.group["params"], p), p, state)

    def _check_finite(self, buckets: list[Bucket]) -> None:
        """``check_finite=True``: raise before any write if a gradient holds inf or NaN.

        One max-abs reduction per device over all gradients (a fused multi-tensor op), one
        host sync; the offending parameter is searched only once a non-finite value is found.
        With sharded (DTensor) gradients, or AdaHessian's ``process_group``, the ranks agree
        first (one all-reduce of a flag), so every rank raises, not only the one holding the
        bad shard: a rank raising alone would leave the others waiting in the next collective.
        """
        if getattr(self, "found_inf", None) is not None:
            return  # GradScaler drives this step and skips it on inf/NaN by itself
        by_device: dict[torch.device, list[Tensor]] = {}
        checked: list[Tensor] = []
        for b in buckets:
            if b.group["check_finite"]:
                checked.extend(b.grads)
                by_device.setdefault(b.device, []).extend(local(g) for g in b.grads
                                                          if g.numel() > 0)  # fmt: skip
        if not checked:
            return
        if _capturing():
            raise RuntimeError(
                f"{self._owner}: check_finite=True reads the gradients on the host, which a CUDA "
                "graph cannot capture; capture with check_finite=False (torch.amp.GradScaler "
                "skips inf/NaN steps on the device)"
            )
        bad_here = any(
            not bool(torch.stack(torch._foreach_norm(grads, math.inf)).isfinite().all())
            for grads in by_device.values()
            if grads
        )
        groups = self._finite_check_groups(checked)
        bad_anywhere = any_rank(bad_here, groups, local(checked[0]).device) if groups else bad_here
        if not bad_anywhere:
            return
        for gi, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                g = None if p.grad is None else local(p.grad)
                if g is None or not group["check_finite"] or bool(g.isfinite().all()):
                    continue
                nan, inf = int(g.isnan().sum()), int(g.isinf().sum())
                raise RuntimeError(
                    f"{self._owner}: the gradient of {self._label(group, gi, i, p)} has "
                    f"{nan} NaN and {inf} inf values; no parameter or state was changed "
                    "(check_finite=True). Lower the learning rate, clip the gradients, or "
                    "train with torch.amp.GradScaler, which skips such steps."
                )
        raise RuntimeError(
            f"{self._owner}: another rank's gradient shards hold NaN or inf values (this rank's "
            "are finite); no parameter or state was changed on any rank (check_finite=True)."
        )

    def _finite_check_groups(self, grads: list[Tensor]) -> list[Any]:
        """Process groups whose ranks must agree on the finite-gradient check: those of the
        device meshes of DTensor (e.g. FSDP2) gradients."""
        return mesh_groups(grads)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict as torch does (the loaded hyperparameters win), then check it;
        a rejected state dict leaves the optimizer as it was.

        Each group keeps this optimizer's ``backend``: it says where the code runs, not how
        training goes (the backends agree bit for bit), so a checkpoint saved where the native
        extension was built still loads and steps where it is not.
        """
        # torch's loader builds new state and group objects, so keeping the old ones is enough
        # to put everything back if a check fails.
        old_state, old_groups = self.state, self.param_groups
        super().load_state_dict(state_dict)
        try:
            self._check_loaded(old_groups)
        except Exception:
            self.state, self.param_groups = old_state, old_groups
            raise

    # State keys an optimizer creates later by itself when missing (e.g. a momentum buffer when
    # momentum is switched on after the first steps); every other key _init_state makes is
    # required in a loaded state.
    _optional_state: tuple[str, ...] = ()

    def _check_loaded(self, old_groups: list[dict[str, Any]]) -> None:
        for gi, group in enumerate(self.param_groups):
            # A state dict from another optimizer class (torch.optim.Adam's into sparseopt.Adam)
            # lacks sparseopt's own keys: take them from this optimizer's defaults.
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            group["backend"] = old_groups[gi]["backend"]
            self._check_group(group, gi)
            for i, p in enumerate(group["params"]):
                state = self.state.get(p)
                if not state:
                    continue
                step = state.get("step")
                if isinstance(step, (int, float)) and not isinstance(step, bool):
                    step = torch.tensor(float(step))  # torch < 1.12 saved plain numbers
                if isinstance(step, Tensor):
                    # Step counters live on the parameter's device (read by the kernels there);
                    # a copy, so stepping never writes into the caller's state_dict.
                    state["step"] = step.to(device=p.device, dtype=torch.float32, copy=True)
                expected: dict[str, Any] = {}
                self._init_state(torch.empty(p.shape, dtype=p.dtype, device="meta"), expected,
                                 group)  # fmt: skip
                missing = [k for k in expected if k not in state and k not in self._optional_state]
                if missing:
                    raise ValueError(
                        f"{self._owner}: the loaded state of {self._label(group, gi, i, p)} lacks "
                        f"{missing} (it has {sorted(state)}); {self._owner} keeps "
                        f"{sorted(expected)}. Is the state dict from another optimizer class, "
                        "or from one built with other options?"
                    )
                self._check_state(group, gi, i, p, state)


def _index(params: list[Tensor], p: Tensor) -> int:
    """Position of ``p`` in ``params`` by identity (list.index would compare tensors)."""
    return next(i for i, q in enumerate(params) if q is p)


def _capturing() -> bool:
    """Whether the current CUDA stream is capturing a graph (False without CUDA)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _on_device(t: Tensor | None, device: torch.device) -> Tensor | None:
    if t is None or t.device == device:
        return t
    return t.to(device)


def new_step(p: Tensor) -> Tensor:
    """A fresh step counter (float32 scalar on the parameter's device, torch's fused layout)."""
    return torch.zeros((), dtype=torch.float32, device=p.device)

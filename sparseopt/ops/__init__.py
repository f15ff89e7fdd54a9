"""sparseopt's dispatcher ops: ``torch.ops.sparseopt.<name>``.

Each op is registered three ways, following torchao/bitsandbytes:

* native CPU and CUDA kernels from the C++ extension ``sparseopt._C`` (csrc/ops/*.cpp);
* the pure-PyTorch reference (:mod:`sparseopt.reference`) as the ``CompositeExplicitAutograd``
  kernel, used for any device that has no native kernel (CUDA in a CPU-only build, MPS, ...);
* a fake kernel, so ``torch.compile`` and ``torch.library.opcheck`` can trace the op.

If the extension is missing or fails to load, importing sparseopt still works: the schemas
below are defined from Python, every call runs the reference, and one warning says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from .specs import SPECS, OpSpec

# Views of the op table (sparseopt/ops/specs.py), by op name.
SCHEMAS: dict[str, str] = {name: spec.schema for name, spec in SPECS.items()}
REFERENCES: dict[str, Callable[..., Any]] = {name: spec.reference for name, spec in SPECS.items()}

_load_error: str | None = None
try:
    from .. import _C  # noqa: F401  (loading the library registers the native kernels)

    _native_backends: frozenset[str] = frozenset(_C.compiled_backends())
    _build_info: dict[str, Any] = dict(_C.build_info())
except (ImportError, OSError) as exc:  # not built, or built against another torch
    _C = None
    _native_backends = frozenset()
    _build_info = {}
    _load_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "sparseopt: the native extension sparseopt._C could not be loaded "
        f"({_load_error}); every optimizer falls back to the pure-PyTorch reference, which is "
        "correct but slower. Rebuild with `pip install --no-build-isolation -e .` against the "
        "installed torch.",
        RuntimeWarning,
        stacklevel=2,
    )


def mismatched(param: torch.Tensor, like: torch.Tensor) -> bool:
    """Whether ``like`` (a gradient or state tensor) differs from ``param`` in dtype, shape,
    device, or is not dense: the test of :func:`first_mismatch`, one pair at a time."""
    return (like.layout != torch.strided or like.dtype != param.dtype
            or like.device != param.device or like.shape != param.shape)


# Eager-only (an optimizer step runs it when not compiling); disabled for dynamo so that a step
# running eagerly inside a compiled region (e.g. past the recompile limit) never traces into it.
@torch.compiler.disable
def first_mismatch(params: list[torch.Tensor], likes: list[torch.Tensor]) -> int:
    """The index of the first ``likes[k]`` that is :func:`mismatched` with ``params[k]``, or -1
    (the optimizers' pre-flight check; one native pass when built)."""
    if _C is not None:
        return _C.first_mismatch(params, likes)
    return next((k for k, (p, t) in enumerate(zip(params, likes)) if mismatched(p, t)), -1)


_lib = torch.library.Library("sparseopt", "FRAGMENT")  # kept alive for the registrations below


def _tensors(args: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += [t for t in a if isinstance(t, torch.Tensor)]
    return out


def _make_fake(spec: OpSpec) -> Callable[..., None]:
    """Fake kernel of an in-place optimizer op: it mutates its inputs and returns nothing.

    It still rejects tensors on different devices: the dispatcher sends a call that mixes, say,
    CPU and meta tensors here, and a silent no-op would hide the mistake. (A tensor ``lr`` may
    be on the CPU whatever the device: the ops read it on the host then.)
    """

    def fake(*args: Any, **kwargs: Any) -> None:
        args = tuple(a for i, a in enumerate(args) if i != spec.lr_index)
        kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
        devices = {t.device for t in _tensors(list(args) + list(kwargs.values()))}
        if len(devices) > 1:
            found = ", ".join(sorted(str(d) for d in devices))
            raise RuntimeError(
                f"sparseopt::{spec.name}: got tensors on several devices ({found}); all tensors "
                "of one call must be on one device"
            )
        return None

    return fake


_stale: list[str] = []


def _op_exists(qualname: str) -> bool:
    name, _, overload = qualname.partition(".")
    try:
        packet = getattr(torch.ops.sparseopt, name)
        if overload:
            getattr(packet, overload)
    except (AttributeError, RuntimeError):
        return False
    return True


def _register(spec: OpSpec) -> None:
    overloads = [(spec.name, spec.schema)]
    if spec.tensor_lr_schema is not None:
        overloads.append((spec.name + ".tensor_lr", spec.tensor_lr_schema))
    for name, schema in overloads:
        if _C is None or not _op_exists(name):
            # No extension, or one built from older sources that lacks this op: define it here
            # and let the reference run it.
            if _C is not None:
                _stale.append(name)
            _lib.define(name + schema)
        qualname = f"sparseopt::{name}"
        torch.library.register_fake(qualname, spec.fake or _make_fake(spec), lib=_lib)
        torch.library.register_kernel(qualname, None, spec.reference, lib=_lib)
    if spec.autograd is not None:
        backward, setup = spec.autograd
        torch.library.register_autograd(f"sparseopt::{spec.name}", backward,
                                        setup_context=setup, lib=_lib)  # fmt: skip


for _spec in SPECS.values():
    _register(_spec)
if _stale:
    warnings.warn(
        f"sparseopt: the compiled extension is older than the Python package and lacks "
        f"{_stale}; those ops run the pure-PyTorch reference. Rebuild with "
        "`pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )


def extension_loaded() -> bool:
    """True when the compiled extension ``sparseopt._C`` loaded (whatever its devices; see
    :func:`has_native` for one device)."""
    return _C is not None


def has_native(device: torch.device | str) -> bool:
    """True when ``device``'s type has native (compiled) kernels in this build: the extension
    loaded and was compiled for that device type."""
    return torch.device(device).type in _native_backends


def backend_info() -> dict[str, Any]:
    """Which backends this installation can run, and how it was built.

    Keys: ``native`` (the extension loaded), ``backends`` (device types with native kernels),
    ``reference`` (always True: the pure-PyTorch fallback), ``load_error`` (why the extension
    did not load, or None), ``torch`` (the running torch), ``torch_cuda`` (its CUDA version),
    ``cuda_available`` and, from the build, ``openmp``, ``cuda_arch_list``, ``compiler``.
    """
    info: dict[str, Any] = {
        "native": _C is not None,
        "backends": sorted(_native_backends),
        "reference": True,
        "load_error": _load_error,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    info.update({k: v for k, v in _build_info.items() if k != "backends"})
    return info


def resolve(name: str, device: torch.device, backend: str) -> Callable[..., Any]:
    """The callable that runs op ``name`` on ``device`` for an optimizer's ``backend`` choice.

    ``"auto"``: the dispatcher op (native kernel where compiled, else the reference);
    ``"native"``: the dispatcher op, and an error if this device has no native kernel;
    ``"reference"``: the pure-PyTorch reference, always.
    """
    if backend == "reference":
        return REFERENCES[name]
    if backend == "native" and (not has_native(device) or name in _stale):
        why = f" (the extension did not load: {_load_error})" if _load_error else ""
        raise RuntimeError(
            f"sparseopt: backend='native' was requested but this build has no native kernel "
            f"for device type '{device.type}'{why}; native backends here: "
            f"{sorted(_native_backends) or 'none'}. Use backend='auto' to fall back to the "
            "pure-PyTorch reference."
        )
    return getattr(torch.ops.sparseopt, name)


# The ops as attributes of this module (sparseopt.ops.adam_step_ is torch.ops.sparseopt.adam_step_).
globals().update({name: getattr(torch.ops.sparseopt, name) for name in SPECS})

__all__ = [
    "SPECS",
    "OpSpec",
    "SCHEMAS",
    "REFERENCES",
    "backend_info",
    "has_native",
    "first_mismatch",
    "mismatched",
    "extension_loaded",
    "resolve",
    *SPECS,
]

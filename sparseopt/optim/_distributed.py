"""What the optimizers need from torch.distributed: DTensor (FSDP2) shards and all-reduces.

Element-wise rules need no communication, so sharded parameters step on their local shards;
the only collectives are the finite-gradient agreement (``check_finite``) and AdaHessian's
``process_group`` averaging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (FSDP2), else the tensor itself."""
    return getattr(t, "_local_tensor", t)


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


def has_dtensor(params: list[Tensor]) -> bool:
    dtensor = _dtensor_type()
    return dtensor is not None and any(isinstance(p, dtensor) for p in params)


def on_local_shards(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an element-wise op on the local shards of DTensor arguments (FSDP2's parameters,
    gradients and state): element-wise rules need no communication."""
    dtensor = _dtensor_type()

    def to_local(a: Any) -> Any:
        if isinstance(a, (list, tuple)):
            return [to_local(t) for t in a]
        return a._local_tensor if isinstance(a, dtensor) else a

    def call(*args: Any) -> Any:
        return fn(*[to_local(a) for a in args])

    return call


def mesh_groups(grads: list[Tensor]) -> list[Any]:
    """The process groups of the device meshes of DTensor (e.g. FSDP2) gradients."""
    groups: dict[int, Any] = {}
    for g in grads:
        mesh = getattr(g, "device_mesh", None)
        if mesh is not None and id(mesh) not in groups:
            groups[id(mesh)] = [mesh.get_group(d) for d in range(mesh.ndim)]
    return [pg for per_mesh in groups.values() for pg in per_mesh]


def any_rank(flag: bool, groups: list[Any], device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank of ``groups`` (one all-reduce of a flag per group)."""
    import torch.distributed as dist

    box = torch.tensor(float(flag), device=device)
    for pg in groups:
        dist.all_reduce(box, op=dist.ReduceOp.MAX, group=pg)
    return bool(box)


def world_size() -> int:
    """The default group's size when torch.distributed is initialized, else 1."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def check_process_group(owner: str, group: Any) -> Any:
    if group is None:
        return None
    import torch.distributed as dist

    if not dist.is_available() or not isinstance(group, dist.ProcessGroup):
        raise ValueError(
            f"{owner}: process_group = {group!r} is not a torch.distributed ProcessGroup; "
            "accepted: None, or a process group such as torch.distributed.group.WORLD (after "
            "torch.distributed.init_process_group)"
        )
    return group


def broadcast_seed(seed: int, group: Any) -> int:
    """The seed of the group's first rank, so that every rank draws the same probes."""
    import torch.distributed as dist

    box = [seed]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group)
    return int(box[0])


def averaged(tensors: list[Tensor], group: Any) -> list[Tensor]:
    """The mean of each tensor over ``group``: one all-reduce (sum, then / size) per device
    and dtype on a flat buffer. New tensors (the inputs may be expanded views), in the
    inputs' order, which is the same on every rank (the parameters' order)."""
    import torch.distributed as dist

    size = dist.get_world_size(group)
    if size == 1:
        return list(tensors)
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    out: list[Tensor] = list(tensors)
    for idx in buckets.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in idx])
        dist.all_reduce(flat, group=group)
        flat.div_(size)
        offset = 0
        for i in idx:
            t = tensors[i]
            mean = flat[offset : offset + t.numel()].view(t.shape)
            if not t.is_contiguous():  # keep the layout (e.g. channels_last) for the kernels
                mean = torch.empty_like(t, memory_format=torch.preserve_format).copy_(mean)
            out[i] = mean
            offset += t.numel()
    return out

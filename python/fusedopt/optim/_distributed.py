"""Sharded params (FSDP2 / DTensor): kernels run on local shards, global scalars are all-reduced.

With ``fully_shard`` every param, grad and state is a DTensor whose local tensor is this rank's
shard. The kernels see only local tensors; what is global about a step — the grad norm of the
prologue, IAN-SGD's normalizer, NSGDm's momentum norm, the telemetry sums and AdamL's loss — is
made global with one small all-reduce of a few fp64 scalars over the mesh dimensions the params
are sharded on (replicated dimensions hold identical copies and are not summed).
"""
from __future__ import annotations

import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .. import _stats as S
from ..reference.prologue import clip_coefficient

# Note [lazy DTensor]: importing torch.distributed.tensor costs ~2 s (sympy, DTensor's op
# registry), so fusedopt never imports it. A DTensor cannot exist unless that module was
# imported (by fully_shard, distribute_tensor, ... or the user), so its absence from
# sys.modules already answers "is this a DTensor?" with no; once present, its class is cached.
_DTENSOR_MODULE = "torch.distributed.tensor"
_dtensor_type: type | None = None


def _dtensor() -> type | None:
    """DTensor's class if torch.distributed.tensor is loaded (and cached from then on), else
    None. A module still initializing (no DTensor attribute yet) reads as absent."""
    global _dtensor_type
    if _dtensor_type is None:
        _dtensor_type = getattr(sys.modules.get(_DTENSOR_MODULE), "DTensor", None)
    return _dtensor_type


def is_dtensor(t: Any) -> bool:
    cls = _dtensor_type or _dtensor()
    return cls is not None and isinstance(t, cls)


def local(t: Tensor) -> Tensor:
    """The storage a kernel writes: a DTensor's local shard, or the tensor itself."""
    return t._local_tensor if is_dtensor(t) else t  # noqa: SLF001 (the shard, not a copy)


def shard_groups(params: list[Tensor], owner: str) -> list | None:
    """Process groups to sum global scalars over, or None when no param is a DTensor.

    All params must be DTensors of one mesh with one placement (what ``fully_shard`` makes), or
    none may be: a plain tensor next to shards would be counted once per rank.
    """
    kinds = {is_dtensor(p) for p in params}
    if kinds == {False}:
        return None
    if kinds == {True, False}:
        raise ValueError(f"{owner}: some params are DTensors (sharded) and some are not; fusedopt "
                         "needs all params of one optimizer sharded on one mesh, or none")
    from torch.distributed.tensor import Shard  # loaded: a param above is a DTensor

    mesh, placements = params[0].device_mesh, params[0].placements
    for p in params:
        if p.device_mesh != mesh or p.placements != placements:
            raise ValueError(f"{owner}: DTensor params on different meshes or placements "
                             f"({p.device_mesh}, {p.placements} vs {mesh}, {placements})")
    return [mesh.get_group(i) for i, pl in enumerate(placements) if isinstance(pl, Shard)]


def zero_groups(owner: str, clips: bool) -> list | None:
    """The process group of a ``ZeroRedundancyOptimizer`` constructing this optimizer, or None.

    Under ZeRO each rank's local optimizer holds one partition of the params, so a norm it
    computes alone is its partition's: clipping by it would scale each rank's params
    differently. Note [ZeRO norm]: fusedopt makes the norm global instead — the local
    optimizer finds the ZeroRedundancyOptimizer that is constructing it (a caller frame's
    ``self``) and all-reduces the squared partial norm and the inf flag over its process group
    on the device, as for FSDP2 shards. Looked up only when torch's ZeRO module is loaded.
    """
    zero = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
    if zero is None:
        return None
    frame = sys._getframe(1)
    for _ in range(12):
        frame = frame.f_back
        if frame is None:
            return None
        owner_obj = frame.f_locals.get("self")
        if isinstance(owner_obj, zero.ZeroRedundancyOptimizer):
            group = owner_obj.process_group
            if dist.get_world_size(group) == 1:
                return None
            return [group]
    return None


def all_reduce_(t: Tensor, groups: list, op=dist.ReduceOp.SUM) -> None:
    for group in groups:
        dist.all_reduce(t, op=op, group=group)


def finish_prologue_(stats: Tensor, region: int, max_norm: float | None, groups: list) -> None:
    """Make a prologue run on local shards global: sum the squares, OR the inf flags, then norm,
    clip coefficient and gradient coefficient as docs/algorithms.md#prologue (the local prologue ran
    without clipping, so ``stats[region + 4]`` holds ``inv_scale``).

    One all-reduce (its latency is most of a sharded step's host time on small models): the
    slots [sum of squares, norm, inf flag] are summed together — the norm is recomputed below,
    and the summed 0/1 flags count the ranks that saw a non-finite grad, clamped back to 1."""
    all_reduce_(stats[region:region + 3], groups)
    stats[region + 2].clamp_(max=1.0)
    norm = torch.sqrt(stats[region])
    clip = clip_coefficient(norm, max_norm)
    stats[region + 1] = norm
    stats[region + 3] = clip
    stats[region + 4] = stats[region + 4] * clip


def finish_telemetry_(stats: Tensor, groups: list) -> None:
    all_reduce_(stats[S.UPDATE_SQ:S.STEP_GRAD_SQ + 1], groups)


def mean_loss(loss: Tensor) -> Tensor:
    """The loss averaged over the default process group when torch.distributed runs (DDP or
    FSDP: every rank then sees the same loss, as AdamL's global scalars need)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return loss
    out = loss.detach().to(torch.float64).reshape(1).clone()
    dist.all_reduce(out)
    return (out / dist.get_world_size()).reshape(())

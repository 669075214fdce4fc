"""Multi-process training with ``torchrun`` (DistributedDataParallel): nccl on GPU, gloo on CPU.

``torchrun --nproc_per_node N -m hsnet_lite.train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; without them everything runs in one process with the same code path. Only
rank 0 logs and saves. Evaluation shards episodes without padding (rank r takes episodes
r, r + N, ...) and sums the intersection/union areas over ranks, so the paper's mIoU and
FB-IoU are exact for any number of processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from .metrics import FewShotMeter


@dataclass
class DistContext:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available); CUDA uses GPU ``local_rank``."""
    if requested not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None (auto), got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(device: str | None = None) -> DistContext:
    """Join the process group that ``torchrun`` describes (or run as a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world, local, dev, owns)


def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel over the learner's gradients (the frozen backbone has none).

    Buffers are not re-broadcast each step: the only buffers are the frozen backbone's
    BatchNorm statistics, identical on every rank.
    """
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself in a single process)."""
    if not ctx.distributed:
        return t
    out = t.detach().clone().to(ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(out)
    return out.to(t.device)


def reduce_meter(meter: FewShotMeter, ctx: DistContext) -> FewShotMeter:
    """Sum a :class:`FewShotMeter`'s per-class areas and episode count over ranks, in place."""
    if not ctx.distributed:
        return meter
    ids = meter.class_ids
    stacked = torch.stack([torch.stack([meter.inter[c], meter.union[c]]) for c in ids])
    stacked = all_reduce_sum(stacked, ctx)
    for c, row in zip(ids, stacked):
        meter.inter[c], meter.union[c] = row[0].clone(), row[1].clone()
    meter.episodes = int(all_reduce_sum(torch.tensor([meter.episodes], dtype=torch.float64), ctx).item())
    return meter


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``0..length-1``: every episode exactly once overall."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

"""One process or many (``torchrun``): process group, data sharding, rank-0-only side effects,
metric reduction.

``setup()`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); with ``WORLD_SIZE > 1`` it joins the process group with
``nccl`` when the run is on CUDA and ``gloo`` on CPU. Without those variables it is a plain
single process (world size 1) and nothing below communicates.

Data: ``ShardSampler`` is ``torch.utils.data.DistributedSampler`` (every rank sees a disjoint
shard of the same seeded permutation of epoch ``e``, shuffled with ``seed + e``; padded by
repeating the first indices so the shards are equal) plus a ``skip`` so a run resumed mid-epoch
continues with the next batch of the *same* permutation. Validation uses ``EvalShard``: indices
``rank::world`` without padding, so the all-reduced sums count every validation image exactly once.
"""

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None      # "gloo" / "nccl" when a process group is up

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join torchrun's process group when there is one; pick the device (``auto``: this rank's
    GPU when CUDA is available, else CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: CUDA is not available")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(f"--device: expected auto, cpu or cuda, got {device!r}")
    info = DistInfo(rank, world, local_rank, dev)
    if world > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
        info.backend = backend
    return info


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``values`` (any shape, float64 recommended) over ranks; a copy on CPU."""
    if not info.distributed:
        return values.detach().cpu().clone()
    reduced = values.detach().to(info.device if info.backend == "nccl" else "cpu").clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.cpu()


def all_gather_object(obj, info: DistInfo) -> List:
    """``[obj of rank 0, obj of rank 1, ...]`` (a one-element list on a single process)."""
    if not info.distributed:
        return [obj]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP syncs buffers at the
    start of each forward, so after the last step of an epoch every rank holds statistics
    updated by its own batch; evaluation (each rank its own shard) and the checkpoint need one
    model."""
    if not info.distributed:
        return
    with torch.no_grad():
        for buffer in model.buffers():
            if info.backend == "nccl" or buffer.device.type == "cpu":
                dist.broadcast(buffer, src=0)
            else:
                staged = buffer.cpu()
                dist.broadcast(staged, src=0)
                buffer.copy_(staged)


class ShardSampler(Sampler):
    """``DistributedSampler`` with a per-epoch ``skip`` (the first ``skip`` indices of this rank's
    shard are left out: they were trained on before an interruption)."""

    def __init__(self, length: int, info: DistInfo, seed: int, shuffle: bool = True):
        self.inner = DistributedSampler(range(length), num_replicas=info.world_size, rank=info.rank,
                                        shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return len(self.inner) - self.skip

    @property
    def shard_size(self) -> int:
        return len(self.inner)


class EvalShard(Sampler):
    """Indices ``rank, rank + world, ...``: disjoint, no padding (exact sums after all-reduce)."""

    def __init__(self, length: int, info: DistInfo):
        self.indices = list(range(info.rank, length, info.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

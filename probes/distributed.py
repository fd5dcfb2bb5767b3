"""This process's place in a torchrun job, for the stages that split work across ranks (the probe job).

`join(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and joins the
process group: NCCL when the ranks run on CUDA devices (rank r on `cuda:LOCAL_RANK`), gloo on CPUs. A single
process (no torchrun) is rank 0 of 1 and every collective below is a no-op, so a stage has one code path.
Work is never scheduled here: ranks split it by a rule every rank computes alike (shard i goes to rank
i % world; fitting units by `assign`), and synchronise at barriers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from probes.errors import UsageError

# Ranks wait at barriers for the slowest rank's share (a layer of a large model can take an hour on a CPU).
BARRIER_TIMEOUT = timedelta(hours=12)
T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world
        torch_dist.all_gather_object(values, value)
        return values

    def on_main(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 only; every rank returns its result, or raises the UsageError it raised."""
        result: Any = None
        error: str | None = None
        if self.main:
            try:
                result = work()
            except UsageError as raised:
                error = str(raised)
        if self.enabled:
            box = [result, error]
            torch_dist.broadcast_object_list(box, src=0)
            result, error = box
        if error is not None:
            raise UsageError(error)
        return result

    def describe(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": socket.gethostname(), "device": str(self.device)}


def single(device: torch.device) -> Ranks:
    return Ranks(0, 1, 1, device)


def join(device: torch.device, timeout: timedelta | None = BARRIER_TIMEOUT) -> Ranks:
    """Join the torchrun job when there is one (NCCL on CUDA, gloo on CPU); rank 0 of 1 otherwise. `device`: the
    resolved device type of the run (`probes.models.resolve_device`); rank r uses `cuda:LOCAL_RANK`. `timeout`: of
    every collective (None: torch's default for the backend)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    target = device
    if world <= 1:
        return single(target)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    if not torch_dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend=backend, timeout=timeout)
    return Ranks(rank, world, local_world, target)


def leave(ranks: Ranks, together: bool = True) -> None:
    """Leave the process group, by default together (a rank that exits early could leave the others waiting);
    `together=False` after a failure, when another rank may never reach the barrier."""
    if ranks.enabled and torch_dist.is_initialized():
        if together:
            torch_dist.barrier()
        torch_dist.destroy_process_group()


def assign(costs: Sequence[float], world: int) -> list[int]:
    """The rank of each unit of work: longest first, each to the least-loaded rank (ties: lowest rank, then the
    unit's order), so every rank computes the same assignment."""
    loads = [0.0] * world
    owner = [0] * len(costs)
    for unit in sorted(range(len(costs)), key=lambda index: (-costs[index], index)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owner[unit] = rank
        loads[rank] += costs[unit]
    return owner

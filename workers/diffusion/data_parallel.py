"""Data-parallel training across the processes of one job, started with torchrun's environment.

A job with several GPUs runs one process per GPU, each with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set as torchrun sets them. ``Ranks.from_env`` reads where this process
stands; ``ProcessGroup`` joins the others (gloo on the CPU, NCCL on CUDA) and offers the few collectives the
training loop needs. A process without ``WORLD_SIZE`` (or with 1) is a group of one, and every collective is then
a no-op, so the loop is written once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from workers.errors import JobFailed

#: What every process of a data-parallel job needs in its environment (as torchrun sets it).
_REQUIRED_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in its job: rank (0 is the main one) of world_size, local_rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Ranks:
        """Read torchrun's variables; without WORLD_SIZE (or with 1) this process is alone.

        Raises JobFailed naming the variable when WORLD_SIZE > 1 and the rest is missing or inconsistent.
        """
        world_size = _env_int(environ, "WORLD_SIZE", "1")
        if world_size < 1:
            raise JobFailed(f"WORLD_SIZE={world_size} is not a positive number of processes")
        if world_size == 1:
            return cls()
        missing = [name for name in _REQUIRED_ENV if not environ.get(name)]
        if missing:
            raise JobFailed(
                f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: start every process of a multi-GPU"
                " job with torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)"
            )
        rank, local_rank = _env_int(environ, "RANK"), _env_int(environ, "LOCAL_RANK")
        if not 0 <= rank < world_size or local_rank < 0:
            raise JobFailed(f"RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world_size}")
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def is_main(self) -> bool:
        """True for the process that writes checkpoints and reports progress (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(environ: Mapping[str, str], name: str, default: str | None = None) -> int:
    raw = environ.get(name, default)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise JobFailed(f"{name}={raw!r} is not an integer; it is set by the job's launcher (torchrun's environment)")


class ProcessGroup:
    """This process's membership of its job's process group, and the collectives the training loop uses.

    Use as a context manager: entering joins the group (when there is more than one rank), leaving it normally
    waits for every rank and destroys the group. On an exception the group is left to die with the process:
    destroying it would wait for ranks that may never come, and the job's launcher stops the others.
    """

    def __init__(self, ranks: Ranks, device: torch.device) -> None:
        self.ranks = ranks
        self.device = device

    @property
    def backend(self) -> str:
        """NCCL between CUDA GPUs, gloo otherwise (CPU, or Ray's logical GPUs on a machine without CUDA)."""
        return "nccl" if self.device.type == "cuda" else "gloo"

    def __enter__(self) -> ProcessGroup:
        if self.ranks.distributed:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            # env:// reads MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE, checked by Ranks.from_env.
            dist.init_process_group(self.backend, rank=self.ranks.rank, world_size=self.ranks.world_size)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.ranks.distributed and exc_type is None:
            # No rank returns before the others: when any has returned, rank 0's last checkpoint is on disk.
            dist.barrier()
            dist.destroy_process_group()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank (any picklable object)."""
        if not self.ranks.distributed:
            return value
        box = [value if self.ranks.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def mean_and_any(self, value: float, flag: bool) -> tuple[float, bool]:
        """The mean of ``value`` over the ranks, and whether ``flag`` is True on any rank (one collective)."""
        if not self.ranks.distributed:
            return value, flag
        both = torch.tensor([value, float(flag)], dtype=torch.float64, device=self.device)
        dist.all_reduce(both)
        total, flags = both.tolist()
        return total / self.ranks.world_size, flags > 0

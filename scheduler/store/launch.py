"""How a job's processes are laid out and stopped: its gang shape and its stop protocol.

A job of ``gpus`` GPUs runs as one gang, all of it in one zone: ``gpus_per_node`` GPUs on each of
``gpus / gpus_per_node`` nodes (None: the fewest nodes that fit). ``mode`` is ``per-gpu`` (one process per GPU,
with torchrun's environment) or ``per-node`` (one process per node, for scripts that run ``torchrun`` or
``accelerate launch`` themselves). Stopping (suspend, preemption, cancel, time limit) follows Slurm's
``--signal``: ``stop_signal`` to every process of the job, ``grace_s`` seconds to checkpoint and exit, then
SIGKILL. ``memory_limit_gib`` (None: none) bounds the memory each of the job's processes may allocate
(``workers.memory_limit``); a process that asks for more fails, and the job with it, saying
"killed: memory limit".
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from typing import Any

from scheduler.errors import InvalidRequest

LAUNCH_MODES = ("per-gpu", "per-node")
#: Signals a job may ask to be stopped with (SIGKILL and SIGSTOP cannot be caught, so they give no grace).
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")
#: The grace a job gets to checkpoint and exit after its stop signal, unless it asks otherwise (seconds).
DEFAULT_GRACE_S = 120.0
#: The longest grace a job may ask for: an hour (a stop that waits longer holds GPUs others are due on).
MAX_GRACE_S = 3600.0
#: The range of a job's memory limit, per process (GiB): from what an interpreter needs to start, to 64 TiB.
MIN_MEMORY_LIMIT_GIB = 0.0625
MAX_MEMORY_LIMIT_GIB = 65536.0


@dataclass(frozen=True)
class Launch:
    """A job's gang shape and stop protocol (see the module docstring)."""

    gpus_per_node: int | None = None
    mode: str = "per-gpu"
    stop_signal: str = "SIGTERM"
    grace_s: float = DEFAULT_GRACE_S
    memory_limit_gib: float | None = None

    @property
    def signal_number(self) -> int:
        return int(getattr(signal, self.stop_signal))

    def to_dict(self) -> dict[str, Any]:
        """As the API shows it, which is also as the ``jobs`` table keeps it (``scheduler.store.models.Job``)."""
        return {"gpus_per_node": self.gpus_per_node, "launch": self.mode, "stop_signal": self.stop_signal,
                "grace_s": self.grace_s, "memory_limit_gib": self.memory_limit_gib}

    @classmethod
    def of(cls, job: Any) -> Launch:
        """A stored job's launch (rows stored before these columns get the defaults)."""
        return cls(getattr(job, "gpus_per_node", None), getattr(job, "launch", None) or "per-gpu",
                   getattr(job, "stop_signal", None) or "SIGTERM",
                   DEFAULT_GRACE_S if getattr(job, "grace_s", None) is None else float(job.grace_s),
                   getattr(job, "memory_limit_gib", None))


DEFAULT_LAUNCH = Launch()


def check_launch(gpus: int, gpus_per_node: Any = None, mode: Any = None, stop_signal: Any = None,
                 grace_s: Any = None, memory_limit_gib: Any = None) -> Launch:
    """A submission's launch options checked; a problem raises InvalidRequest naming the field."""
    if gpus_per_node is not None:
        if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or not 1 <= gpus_per_node <= gpus:
            raise InvalidRequest(f"gpus_per_node: must be an integer from 1 to gpus ({gpus}), got {gpus_per_node!r}"
                                 [:200], "gpus_per_node")
        if gpus % gpus_per_node:
            raise InvalidRequest(f"gpus_per_node: must divide gpus ({gpus}) so every node runs as many GPUs; "
                                 f"got {gpus_per_node}", "gpus_per_node")
    mode = "per-gpu" if mode is None else mode
    if mode not in LAUNCH_MODES:
        raise InvalidRequest(f"launch: must be one of {', '.join(LAUNCH_MODES)}, got {mode!r}"[:200], "launch")
    stop_signal = "SIGTERM" if stop_signal is None else stop_signal
    if isinstance(stop_signal, str) and stop_signal.upper() in {s[3:] for s in STOP_SIGNALS}:
        stop_signal = "SIG" + stop_signal.upper()
    if stop_signal not in STOP_SIGNALS:
        raise InvalidRequest(f"stop_signal: must be one of {', '.join(STOP_SIGNALS)}, got {stop_signal!r}"[:200],
                             "stop_signal")
    if grace_s is None:
        grace_s = DEFAULT_GRACE_S
    elif isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not (
            math.isfinite(grace_s) and 0 <= grace_s <= MAX_GRACE_S):
        raise InvalidRequest(f"grace_s: must be a number of seconds from 0 to {MAX_GRACE_S:.0f}, got {grace_s!r}"
                             [:200], "grace_s")
    if memory_limit_gib is not None:
        if isinstance(memory_limit_gib, bool) or not isinstance(memory_limit_gib, (int, float)) or not (
                math.isfinite(memory_limit_gib) and MIN_MEMORY_LIMIT_GIB <= memory_limit_gib <= MAX_MEMORY_LIMIT_GIB):
            raise InvalidRequest(f"memory_limit_gib: must be a number of GiB from {MIN_MEMORY_LIMIT_GIB:g} to "
                                 f"{MAX_MEMORY_LIMIT_GIB:g}, or null for none; got {memory_limit_gib!r}"[:200],
                                 "memory_limit_gib")
        memory_limit_gib = float(memory_limit_gib)
    return Launch(gpus_per_node, mode, stop_signal, float(grace_s), memory_limit_gib)

"""How a diffusion job sets up torch on the machine it runs on: threads, device, precision, progress pacing."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

import torch
from diffusers.utils import logging as diffusers_logging

from workers.errors import JobFailed

log = logging.getLogger(__name__)

#: Environment variable: torch CPU threads per job. Default 1, because several jobs may share a few cores.
TORCH_THREADS_ENV = "WATTSCHED_TORCH_THREADS"
#: The shortest gap between two progress reports, in seconds, so reports never slow a fast loop down.
REPORT_INTERVAL_S = 0.5

Report = Callable[[dict], None]
ShouldStop = Callable[[], bool]


def no_report(progress: dict) -> None:
    """A report callback that drops progress (for callers that do not watch)."""


def never_stop() -> bool:
    """A should_stop poll for callers that never ask a job to stop."""
    return False


def prepare_torch() -> torch.device:
    """Set torch's thread count from the environment, quiet diffusers, and return the device to run on."""
    raw = os.environ.get(TORCH_THREADS_ENV, "1")
    try:
        threads = int(raw)
        if threads < 1:
            raise ValueError
    except ValueError:
        raise JobFailed(
            f"{TORCH_THREADS_ENV}={raw!r} is not a positive integer; set it to the CPU threads one job may use"
        ) from None
    torch.set_num_threads(threads)
    # Progress bars write to the terminal; progress goes through report() instead.
    diffusers_logging.disable_progress_bar()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log.info("running on %s with %d torch threads", device, threads)
    return device


def autocast(device: torch.device, mixed_precision: str) -> contextlib.AbstractContextManager:
    """The forward-pass precision context: bf16 autocast when asked for (CPU and CUDA), else full precision."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


class Pacer:
    """Decides when a loop reports progress: on its first and last step, and otherwise every REPORT_INTERVAL_S."""

    def __init__(self, interval_s: float = REPORT_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._last_s: float | None = None

    def due(self, last_step: bool = False) -> bool:
        now_s = time.monotonic()
        if self._last_s is None or last_step or now_s - self._last_s >= self._interval_s:
            self._last_s = now_s
            return True
        return False

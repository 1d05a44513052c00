"""How a running job talks to its process: progress reports out, a stop request in (torch-free, for every kind)."""

from __future__ import annotations

import time
from collections.abc import Callable

#: The shortest gap between two progress reports, in seconds, so reports never slow a fast loop down.
REPORT_INTERVAL_S = 0.5

#: Receives ``{"step": units done, "total": units of the job, ...}``; ``total`` is the kind's ``work_units``.
Report = Callable[[dict], None]
#: Polled between two steps; True once the job was asked to stop (it then checkpoints, if it can, and returns).
ShouldStop = Callable[[], bool]


def no_report(progress: dict) -> None:
    """A report callback that drops progress (for callers that do not watch)."""


def never_stop() -> bool:
    """A should_stop poll for callers that never ask a job to stop."""
    return False


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

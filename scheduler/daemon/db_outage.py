"""What the daemon's threads know of a database outage: since when, and how long to wait before trying again.

The tick thread and the event thread both meet it; it is logged once when it begins and once when it ends, not
at every failed attempt, and the attempts back off from ``RETRY_FIRST_S`` to ``RETRY_MAX_S``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Seconds before the first retry after a failure (each retry after it waits twice as long).
RETRY_FIRST_S = 0.5
#: Seconds between retries at most: how late the daemon may notice that the database is back.
RETRY_MAX_S = 5.0


class DatabaseOutage:
    """Tracks whether the database is away; thread-safe."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._since_s: float | None = None
        self._failures = 0

    @property
    def ongoing(self) -> bool:
        return self._since_s is not None

    @property
    def failures(self) -> int:
        """Attempts that failed since the outage began (0: none is going on)."""
        return self._failures

    def failed(self, what: str, exc: BaseException) -> float:
        """``what`` could not be done because the database is away; returns the seconds to wait before retrying."""
        with self._lock:
            if self._since_s is None:
                self._since_s = self._monotonic()
                log.warning("the database is unavailable (%s); %s waits and tries again until it is back", exc, what)
            self._failures += 1
            return min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures - 1))

    def recovered(self) -> None:
        """A database write succeeded: the outage, if any, is over."""
        with self._lock:
            if self._since_s is None:
                return
            log.warning("the database is back after %.1f s; catching up", self._monotonic() - self._since_s)
            self._since_s, self._failures = None, 0

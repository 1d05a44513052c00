"""A deadline for each wait on a PostgreSQL connection, enforced from outside the waiting thread.

PostgreSQL's own ``statement_timeout`` is kept by the server: a server that accepted the connection but no longer
answers (stopped, partitioned behind a proxy that still holds the TCP connection) never applies it, and the
driver waits on the socket for ever. The watchdog shuts such a socket down once its deadline passes, so the
driver's wait ends with a disconnection error, which the engine turns into ``DatabaseUnavailable``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)

#: Seconds the watchdog's thread lingers with nothing armed before it ends (a new deadline starts another).
IDLE_S = 30.0


class SocketWatchdog:
    """Shuts down the socket of a connection whose deadline passes before ``disarm``; one thread for all."""

    def __init__(self, monotonic=time.monotonic):
        self._monotonic = monotonic
        self._changed = threading.Condition()
        self._armed: dict[int, int] = {}  # token -> file descriptor
        self._deadlines: list[tuple[float, int]] = []  # (monotonic deadline, token), a heap
        self._tokens = itertools.count(1)
        self._thread: threading.Thread | None = None
        self.fired = 0  # sockets shut down so far (tests and logs)

    def arm(self, fileno: int, seconds: float) -> int:
        """Watch the socket ``fileno`` for ``seconds``; returns the token that ``disarm`` takes."""
        with self._changed:
            token = next(self._tokens)
            self._armed[token] = fileno
            heapq.heappush(self._deadlines, (self._monotonic() + seconds, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wattsched-db-watchdog", daemon=True)
                self._thread.start()
            elif self._deadlines[0][1] == token:
                self._changed.notify()
            return token

    def disarm(self, token: int | None) -> None:
        """The wait ended in time: forget it. Disarming twice, or None, does nothing."""
        if token is not None:
            with self._changed:
                self._armed.pop(token, None)

    def _run(self) -> None:
        with self._changed:
            idle_since = self._monotonic()
            while True:
                while self._deadlines and self._deadlines[0][1] not in self._armed:
                    heapq.heappop(self._deadlines)  # disarmed in time
                now = self._monotonic()
                if not self._deadlines:
                    if now - idle_since >= IDLE_S:
                        self._thread = None
                        return
                    self._changed.wait(IDLE_S)
                    continue
                idle_since = now
                deadline, token = self._deadlines[0]
                if deadline > now:
                    self._changed.wait(deadline - now)
                    continue
                heapq.heappop(self._deadlines)
                # Under the lock: the owner cannot disarm and close the connection (freeing its descriptor for
                # another socket) while we shut it down.
                _shut_down(self._armed.pop(token))
                self.fired += 1


def _shut_down(fileno: int) -> None:
    """End every wait on the socket (the peer's side sees the connection close); the descriptor stays open,
    for its owner to close."""
    try:
        duplicate = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return  # already closed by its owner
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
        log.warning("a database connection did not answer in time; closed it")
    except OSError:
        pass
    finally:
        duplicate.close()

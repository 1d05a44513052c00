"""This daemon's role among the daemons on one database: the leader schedules, a standby only serves the API.

A ``Leadership`` holds the leader lease (scheduler.store.lease) for this daemon: it tries every ``renew_s``,
calls ``on_elected`` when it wins the lease and ``on_deposed`` when it loses it. A leader that cannot reach the
database keeps its role until its lease would expire (nobody else can take it before), then steps down; one that
finds another holder steps down at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler.clock import Clock
from scheduler.errors import DatabaseError
from scheduler.store.lease import Lease

log = logging.getLogger(__name__)

LEADER = "leader"
STANDBY = "standby"


def holder_id() -> str:
    """A name for this daemon in the lease: host and process, and a random part (two daemons may share one)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leadership:
    """Wins, keeps and loses the leader lease for one daemon, and says its role."""

    def __init__(self, lease: Lease, clock: Clock, lease_s: float, renew_s: float,
                 on_elected: Callable[[], None], on_deposed: Callable[[], None], holder: str | None = None):
        self.lease = lease
        self.clock = clock
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.holder = holder or holder_id()
        self.role = STANDBY
        self._held_until: datetime | None = None  # as far as this daemon knows, its lease lasts until then
        self._thread: threading.Thread | None = None
        self._unreachable = False

    @property
    def leading(self) -> bool:
        return self.role == LEADER

    def step(self) -> str:
        """One round: hold the lease (take or renew it), change role if that changed; returns the role.

        ``on_elected`` failing (the controller or the database went away while catching up) leaves this daemon
        a standby that still holds the lease: the next round tries again.
        """
        attempted_at = self.clock()
        try:
            state = self.lease.hold(self.holder, self.lease_s)
        except DatabaseError as exc:
            if not self._unreachable:
                log.warning("cannot renew the leader lease: %s", exc)
                self._unreachable = True
            # Until the lease would have expired nobody can take it: leading on is safe until then.
            if self.leading and (self._held_until is None or attempted_at >= self._held_until):
                log.warning("the leader lease has expired without renewal: this daemon stands by")
                self._depose()
            return self.role
        self._unreachable = False
        if not state.held_by(self.holder):
            if self.leading:
                log.warning("daemon %s holds the leader lease: this daemon stands by", state.holder)
                self._depose()
            return self.role
        # Counted from before the attempt: the expiry the database holds is no earlier.
        self._held_until = attempted_at + timedelta(seconds=self.lease_s)
        if not self.leading:
            log.info("this daemon (%s) holds the leader lease: it schedules", self.holder)
            self.on_elected()
            self.role = LEADER
        return self.role

    def _depose(self) -> None:
        self.role = STANDBY
        self._held_until = None
        self.on_deposed()

    def start(self, stopping: threading.Event) -> None:
        """Step every ``renew_s`` in a thread of its own until ``stopping`` is set."""
        self._thread = threading.Thread(target=self._loop, args=(stopping,), name="wattsched-leadership",
                                        daemon=True)
        self._thread.start()

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.renew_s):
            try:
                self.step()
            except Exception:  # a failed election (logged) must not end the loop; the next round tries again
                log.exception("taking over as the leader failed; trying again in %g s", self.renew_s)

    def stop(self) -> None:
        """Wait for the thread (its ``stopping`` set), then end this daemon's lease so a standby need not wait
        for it to expire."""
        if self._thread is not None:
            self._thread.join(timeout=self.renew_s + 5)
        if self.leading:
            self.role = STANDBY
            try:
                self.lease.release(self.holder)
            except DatabaseError:
                pass  # it expires by itself


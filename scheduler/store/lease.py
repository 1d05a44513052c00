"""The leader lease: one row in the database that elects the daemon allowed to schedule.

As the Kubernetes scheduler's leader election: the holder renews the lease every few seconds; while it lives
nobody else may take it, and once it has expired (the holder died or lost the database) the first daemon to ask
gets it. Taking and renewing are one conditional UPDATE (or the first INSERT), which SQLite and PostgreSQL both
apply atomically, so two daemons asking at once never both win.

Expiry is judged by the asking daemon's clock: the daemons' clocks must agree to well within a lease (NTP).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import Clock
from scheduler.store.models import LeaderLease

#: The name of the scheduler's lease row (one per database).
SCHEDULER = "scheduler"


@dataclass(frozen=True)
class LeaseState:
    """Who holds the lease and until when, as the database said after an attempt to hold it."""

    holder: str
    expires_at: datetime

    def held_by(self, holder: str) -> bool:
        return self.holder == holder


class Lease:
    """The lease named ``name`` in the database behind ``sessions``, with time read from ``clock``."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, name: str = SCHEDULER):
        self.sessions = sessions
        self.clock = clock
        self.name = name

    def hold(self, holder: str, duration_s: float) -> LeaseState:
        """Take or renew the lease for ``holder`` until ``duration_s`` from now, if it is free, expired or
        already theirs; returns who holds it afterwards. Raises DatabaseUnavailable when the database is away."""
        now = self.clock()
        until = now + timedelta(seconds=duration_s)
        with self.sessions.begin() as session:
            taken = session.execute(
                update(LeaderLease)
                .where(LeaderLease.name == self.name,
                       (LeaderLease.holder == holder) | (LeaderLease.expires_at <= now))
                .values(holder=holder, expires_at=until)
            ).rowcount
            if taken:
                return LeaseState(holder, until)
        if (current := self.current()) is not None:
            return current
        try:  # no row yet: the first daemon on this database creates it
            with self.sessions.begin() as session:
                session.add(LeaderLease(name=self.name, holder=holder, expires_at=until))
            return LeaseState(holder, until)
        except IntegrityError:  # another daemon created it first
            return self.current()

    def current(self) -> LeaseState | None:
        """Who holds the lease (perhaps expired), or None before any daemon took it."""
        with self.sessions() as session:
            row = session.get(LeaderLease, self.name)
            return None if row is None else LeaseState(row.holder, row.expires_at)

    def release(self, holder: str) -> bool:
        """End ``holder``'s lease now, so that a standby need not wait for it to expire; False if they did not
        hold it."""
        with self.sessions.begin() as session:
            return bool(session.execute(
                update(LeaderLease)
                .where(LeaderLease.name == self.name, LeaderLease.holder == holder)
                .values(expires_at=self.clock())
            ).rowcount)

"""The leader lease and the role it gives a daemon, on SQLite and PostgreSQL, with a clock the test moves."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from scheduler.daemon.leadership import LEADER, STANDBY, Leadership
from scheduler.store.engine import DatabaseTimeouts, make_engine, make_session_factory, upgrade
from scheduler.store.lease import Lease

START = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
LEASE_S = 10.0


class MovableClock:
    """A clock that stands still until the test moves it."""

    def __init__(self):
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return MovableClock()


@pytest.fixture
def lease(upgraded_db_url, clock):
    engine = make_engine(upgraded_db_url)
    yield Lease(make_session_factory(engine), clock)
    engine.dispose()


def test_the_first_daemon_takes_the_lease_and_renews_it(lease, clock):
    assert lease.current() is None
    state = lease.hold("a", LEASE_S)
    assert (state.holder, state.expires_at) == ("a", START + timedelta(seconds=LEASE_S))
    clock.advance(3)
    assert lease.hold("a", LEASE_S).expires_at == START + timedelta(seconds=3 + LEASE_S)
    assert lease.current().holder == "a"


def test_a_second_daemon_is_refused_while_the_lease_lives_and_takes_it_once_it_expired(lease, clock):
    lease.hold("a", LEASE_S)
    clock.advance(LEASE_S - 0.5)
    refused = lease.hold("b", LEASE_S)
    assert (refused.holder, refused.expires_at) == ("a", START + timedelta(seconds=LEASE_S))
    clock.advance(0.5)  # "a" did not renew: at its expiry the lease is free
    assert lease.hold("b", LEASE_S).holder == "b"
    assert lease.hold("a", LEASE_S).holder == "b"  # the old holder comes back too late
    assert lease.current().holder == "b"


def test_a_released_lease_is_taken_at_once(lease, clock):
    lease.hold("a", LEASE_S)
    assert lease.release("a")
    assert not lease.release("b")  # only the holder ends it
    assert lease.hold("b", LEASE_S).holder == "b"


class Roles:
    """Records the callbacks a Leadership makes."""

    def __init__(self):
        self.calls = []
        self.fail_election = False

    def elected(self):
        self.calls.append("elected")
        if self.fail_election:
            raise RuntimeError("the controller is away")

    def deposed(self):
        self.calls.append("deposed")


def leadership(lease, clock, holder, roles):
    return Leadership(lease, clock, LEASE_S, 3.0, roles.elected, roles.deposed, holder=holder)


def test_one_leader_a_standby_and_a_takeover_once_the_leader_stops_renewing(lease, clock):
    a_roles, b_roles = Roles(), Roles()
    a, b = leadership(lease, clock, "a", a_roles), leadership(lease, clock, "b", b_roles)
    assert (a.step(), b.step()) == (LEADER, STANDBY)
    for _ in range(5):  # the leader renews every 3 s: the standby never gets in
        clock.advance(3)
        assert (a.step(), b.step()) == (LEADER, STANDBY)
    clock.advance(LEASE_S)  # the leader died
    assert b.step() == LEADER
    assert (a_roles.calls, b_roles.calls) == (["elected"], ["elected"])
    # The old leader comes back (it was paused, not dead): it finds another holder and steps down.
    assert a.step() == STANDBY
    assert a_roles.calls == ["elected", "deposed"]
    assert b.step() == LEADER


def test_a_failed_takeover_leaves_a_standby_that_tries_again(lease, clock):
    roles = Roles()
    roles.fail_election = True
    daemon = leadership(lease, clock, "a", roles)
    with pytest.raises(RuntimeError):
        daemon.step()
    assert daemon.role == STANDBY
    roles.fail_election = False
    clock.advance(3)
    assert daemon.step() == LEADER
    assert roles.calls == ["elected", "elected"]


def test_a_leader_that_cannot_renew_keeps_its_role_until_its_lease_expires(tmp_path, clock):
    path = tmp_path / "lease.db"
    engine = make_engine(f"sqlite:///{path}", DatabaseTimeouts(busy_s=0.2))
    upgrade(engine)
    roles = Roles()
    daemon = leadership(Lease(make_session_factory(engine), clock), clock, "a", roles)
    assert daemon.step() == LEADER
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # the database is away for this daemon: every write times out
        clock.advance(3)
        assert daemon.step() == LEADER  # its lease, renewed at START, lives until START + 10 s
        clock.advance(LEASE_S - 3)
        assert daemon.step() == STANDBY
        assert roles.calls == ["elected", "deposed"]
        writer.execute("ROLLBACK")
        assert daemon.step() == LEADER  # nobody took it meanwhile: it leads again
    finally:
        writer.close()
        engine.dispose()


def test_wattsched_status_prints_the_role():
    from scheduler.cli.tables import render_status

    first = render_status({"version": "1", "policy": "fifo", "database": "postgresql", "role": "standby"})
    assert first.splitlines()[0] == "wattsched 1  policy fifo  database postgresql  role standby"


def test_an_unstarted_daemon_reports_standby_in_its_status(daemon):
    assert daemon.status()["role"] == STANDBY

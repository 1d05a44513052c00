"""Duration and power estimates kept in memory: loaded once, updated as runs finish to what a fresh load from
the database gives, and never read again by a scheduling tick."""

from datetime import datetime, timezone

import pytest
from fakes import FakeClock
from worker_events import finished, totals
from sqlalchemy import event

from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.store.engine import upgrade
from scheduler.daemon.estimates import FinishedRun, RecentRuns, WorkEstimator

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TRAIN, SAMPLE = ("diffusion-train", {"steps": 100}), ("diffusion-sample", {"checkpoint": "/x"})


def train_run(duration_s: float, power_w: float) -> FinishedRun:
    return FinishedRun("diffusion-train", {"steps": 100}, {"steps_this_run": 100}, duration_s,
                       power_w * duration_s, 1)


def estimates(estimator: WorkEstimator) -> dict[str, tuple[float | None, float]]:
    """What a policy is told of each kind: expected seconds of a job like TRAIN or SAMPLE, and draw per GPU."""
    return {kind: (estimator.duration_s(kind, spec), estimator.power_w(kind)) for kind, spec in (TRAIN, SAMPLE)}


def test_recent_runs_load_once_and_keep_the_latest_as_a_fresh_load_would():
    loads = []
    database = [train_run(10.0, 999.0), train_run(60.0, 100.0), train_run(40.0, 200.0)]  # newest first

    def load():
        loads.append(1)
        return database

    recent = RecentRuns(load, limit=3)
    recent.add(database[0])  # finished before the first use, which loads it with the others: not learned twice
    assert estimates(recent.estimator()) == estimates(WorkEstimator(database))
    newer = [train_run(30.0, 300.0), train_run(20.0, 400.0)]
    for run in newer:
        recent.add(run)
    everything = [*reversed(newer), *database]
    assert estimates(recent.estimator()) == estimates(WorkEstimator(everything[:3]))  # the oldest are forgotten
    assert estimates(recent.estimator()) != estimates(WorkEstimator(everything))
    assert len(loads) == 1


def finish(daemon: Daemon, clock: FakeClock, kind: str, spec: dict, duration_s: float, result: dict | None,
           exit_status: str = "succeeded") -> None:
    """Run a job of ``kind`` for ``duration_s`` at 150 W and report its end as its worker would."""
    store = daemon.store
    run = store.start_run(store.submit(store.validate(kind, spec)).id, "n", "DE", ["w"], None, "go")
    clock.advance(seconds=duration_s)
    daemon.handle_event(finished(run.id, totals(150.0 * duration_s, duration_s, clock.now.timestamp() - duration_s),
                                 exit_status=exit_status, result=result))


def run_history_queries(daemon: Daemon, action) -> list[str]:
    """The statements ``action()`` sends to the database that read the energy of runs (the run history)."""
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(daemon.engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(daemon.engine, "before_cursor_execute", record)
    assert statements  # the listener saw the tick's other queries
    return [s for s in statements if "run_energy" in s]


@pytest.fixture
def clock():
    return FakeClock(T0)


@pytest.fixture
def daemon(upgraded_db_url, tmp_path, clock):
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=clock)
    upgrade(daemon.engine)
    yield daemon
    daemon.engine.dispose()


def test_a_finished_run_updates_the_estimates_as_a_fresh_load_would(daemon, clock, upgraded_db_url, tmp_path):
    finish(daemon, clock, "diffusion-train", {"steps": 100}, 56.0, {"steps_this_run": 100})
    for kind, spec in (TRAIN, SAMPLE):  # waiting jobs the policy needs estimates for
        daemon.store.submit(daemon.store.validate(kind, spec))
    loaded = estimates(daemon.recent_runs.estimator())

    finish(daemon, clock, "diffusion-train", {"steps": 200}, 106.0, {"steps_this_run": 150})
    finish(daemon, clock, "diffusion-sample", {"checkpoint": "/x", "num_images": 4}, 26.0,
           {"num_images": 4, "num_inference_steps": 50})
    finish(daemon, clock, "diffusion-train", {"steps": 100}, 206.0, {"steps_this_run": 100},
           exit_status="failed")  # not learned from: it would raise the median seconds a step

    learned = estimates(daemon.recent_runs.estimator())
    assert learned != loaded
    assert learned == estimates(WorkEstimator(daemon.store.recent_finished_runs()))
    restarted = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=clock)
    try:
        assert restarted.snapshot().waiting == daemon.snapshot().waiting
    finally:
        restarted.engine.dispose()


def test_a_tick_reads_no_run_history(daemon, clock):
    finish(daemon, clock, "diffusion-train", {"steps": 100}, 56.0, {"steps_this_run": 100})
    daemon.store.submit(daemon.store.validate(*TRAIN))
    assert run_history_queries(daemon, daemon.schedule)  # the first tick loads the history...
    finish(daemon, clock, "diffusion-train", {"steps": 200}, 106.0, {"steps_this_run": 150})
    assert run_history_queries(daemon, daemon.schedule) == []  # ...and no tick after it reads it again

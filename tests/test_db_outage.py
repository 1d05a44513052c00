"""The database goes away and comes back: the API answers 503 at once, the client waits it out, and the daemon
records every worker event once, after the database returns, acknowledging none before its commit.

PostgreSQL is cut off behind a TCP proxy this module starts (tests/tcp_proxy.py), never stopped: the proxy
refuses connections, or accepts them and never answers (a blackhole, which the server's own timeouts cannot
see). The controller is stood in for by its real event log (events kept until acknowledged), without Ray.
Skipped without PostgreSQL, failed under CI (db_fixtures).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import types
from datetime import datetime, timezone

import pytest
import requests
from db_fixtures import POSTGRES_URL, _create_schema, _drop_schema, _require_postgres, _schema_url
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from tcp_proxy import TcpProxy
from worker_events import finished, samples, totals

import scheduler.client.client as client_module
from scheduler.client import Client
from scheduler.client.errors import ApiError
from scheduler.cluster.event_log import EventLog
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.errors import DatabaseUnavailable
from scheduler.store.engine import DatabaseTimeouts, make_engine, make_session_factory, upgrade
from scheduler.store.models import PowerSample, Run
from workers.events import Progress

pytestmark = pytest.mark.fault

#: Tight timeouts keep each outage short; the API must answer within ANSWER_S (the issue's bound) whatever they are.
TIMEOUTS = {"db_connect_timeout_s": 2.0, "db_statement_timeout_s": 2.0, "db_pool_timeout_s": 2.0}
ANSWER_S = 5.0
#: How long a test waits for the daemon to catch up by itself before failing (it polls; never sleeps this long).
CATCH_UP_S = 60.0


@pytest.fixture
def postgres(tmp_path):
    """An upgraded schema of its own, reached directly (``direct``) and through a proxy (``via``, ``proxy``)."""
    _require_postgres()
    admin = create_engine(POSTGRES_URL)
    schema = _create_schema(admin)
    direct = _schema_url(schema)
    engine = make_engine(direct)
    upgrade(engine)
    server = make_url(POSTGRES_URL)
    proxy = TcpProxy((server.host or "127.0.0.1", server.port or 5432))
    via = make_url(direct).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield types.SimpleNamespace(direct=engine, via=via, proxy=proxy)
    proxy.close()  # resets the connections it holds, so the server lets go of them before the schema goes
    engine.dispose()
    _drop_schema(admin, schema)
    admin.dispose()


def make_daemon(tmp_path, url: str, **settings) -> Daemon:
    return Daemon(Settings(data_dir=tmp_path, database_url=url, port=0, **{**TIMEOUTS, **settings}))


def answered(method: str, url: str, token: str, **kwargs) -> requests.Response:
    """The API's answer; a request not answered within ANSWER_S fails the test (requests raises ReadTimeout)."""
    return requests.request(method, url, headers={"Authorization": f"Bearer {token}"}, timeout=ANSWER_S, **kwargs)


def assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "database_unavailable" and "try again" in error["message"]


# --- the API ---------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("cut", ["refuse", pytest.param("blackhole", marks=pytest.mark.slow)])
def test_the_api_answers_503_with_retry_after_at_once_and_serves_again_when_the_database_is_back(
        postgres, tmp_path, cut):
    daemon = make_daemon(tmp_path, postgres.via).start_api_only()
    try:
        url, token = daemon.url, daemon.token
        job = answered("POST", f"{url}/v1/jobs", token, json={"kind": "diffusion-train", "spec": {"steps": 5}})
        assert job.status_code == 201
        job_id = job.json()["id"]

        getattr(postgres.proxy, cut)()
        requests_to_make = [("GET", f"{url}/v1/jobs", {}), ("GET", f"{url}/v1/jobs/{job_id}", {}),
                            ("POST", f"{url}/v1/jobs", {"json": {"kind": "diffusion-train", "spec": {"steps": 5}}}),
                            ("GET", f"{url}/v1/history", {}), ("POST", f"{url}/v1/jobs/{job_id}/hold", {})]
        for method, where, kwargs in requests_to_make:
            assert_unavailable(answered(method, where, token, **kwargs))
        # Many at once: none waits behind another's connection attempt for longer than the bound either.
        with_threads = []
        threads = [threading.Thread(target=lambda: with_threads.append(answered("GET", f"{url}/v1/jobs", token)))
                   for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(with_threads) == 10
        for response in with_threads:
            assert_unavailable(response)

        postgres.proxy.forward()
        listed = answered("GET", f"{url}/v1/jobs", token)
        assert listed.status_code == 200
        # Nothing half-stored: the submission refused during the outage made no job.
        assert [j["id"] for j in listed.json()["jobs"]] == [job_id]
        assert answered("GET", f"{url}/v1/jobs/{job_id}", token).json()["state"] == "pending"
    finally:
        daemon.stop()


@pytest.mark.postgres
def test_the_client_waits_out_a_503_for_as_long_as_retry_after_says_and_submits_once(postgres, tmp_path,
                                                                                     monkeypatch):
    daemon = make_daemon(tmp_path, postgres.via).start_api_only()
    waits = []

    def sleep(seconds):  # the client's wait: the database comes back meanwhile
        waits.append(seconds)
        postgres.proxy.forward()

    monkeypatch.setattr(client_module, "time", types.SimpleNamespace(sleep=sleep, monotonic=time.monotonic))
    try:
        client = Client(daemon.url, daemon.token)
        postgres.proxy.refuse()
        job = client.submit("diffusion-train", {"steps": 5}, idempotency_key="once")
        assert waits == [2.0]  # the API's Retry-After
        assert [j.id for j in client.list()] == [job.id]

        # A cancel is not idempotent: its 503 is raised, not retried.
        postgres.proxy.refuse()
        waits.clear()
        with pytest.raises(ApiError) as caught:
            client.cancel(job.id)
        assert (caught.value.status, caught.value.code, waits) == (503, "database_unavailable", [])
    finally:
        postgres.proxy.forward()
        daemon.stop()


def test_a_locked_sqlite_database_answers_503_too(tmp_path):
    daemon = Daemon(Settings(data_dir=tmp_path, port=0, db_busy_timeout_s=0.5)).start_api_only()
    holder = sqlite3.connect(tmp_path / "wattsched.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another writer that never lets go
        response = answered("POST", f"{daemon.url}/v1/jobs", daemon.token,
                            json={"kind": "diffusion-train", "spec": {"steps": 5}})
        assert_unavailable(response)
        holder.execute("ROLLBACK")
        response = answered("POST", f"{daemon.url}/v1/jobs", daemon.token,
                            json={"kind": "diffusion-train", "spec": {"steps": 5}})
        assert response.status_code == 201
    finally:
        holder.close()
        daemon.stop()


# --- the engine ------------------------------------------------------------------------------------------


def test_a_pool_with_no_free_connection_is_unavailable_after_its_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pool.db'}", DatabaseTimeouts(pool_s=0.2))
    held = []
    try:
        with pytest.raises(DatabaseUnavailable, match="no free database connection"):
            for _ in range(100):  # the pool keeps 5 and opens 10 more at most
                held.append(engine.connect())
        assert len(held) == 15
    finally:
        for connection in held:
            connection.close()
        engine.dispose()


def bounded(call, limit_s: float):
    """``call()``'s result or exception, failing the test if it has not returned after ``limit_s`` (a hang)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"still waiting on the database after {limit_s} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.postgres
def test_a_connection_that_stops_answering_mid_session_is_given_up_within_its_deadline(postgres):
    engine = make_engine(postgres.via, DatabaseTimeouts(connect_s=2.0, statement_s=1.0))
    try:
        with engine.connect() as connection:
            assert connection.execute(text("select 1")).scalar() == 1
            postgres.proxy.blackhole()  # the server never hears of the next statement: only we can time it out
            with pytest.raises(DatabaseUnavailable):
                bounded(lambda: connection.execute(text("select 2")), 10.0)
        postgres.proxy.forward()
        with engine.connect() as connection:  # the dead connection was replaced
            assert connection.execute(text("select 3")).scalar() == 3
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_statement_over_the_statement_timeout_is_cancelled_by_the_server(postgres):
    engine = make_engine(postgres.via, DatabaseTimeouts(statement_s=0.5))
    try:
        with engine.connect() as connection, pytest.raises(DatabaseUnavailable, match="statement timeout"):
            bounded(lambda: connection.execute(text("select pg_sleep(30)")), 20.0)
    finally:
        engine.dispose()


# --- worker events ---------------------------------------------------------------------------------------


class HeldEvents:
    """Stands in for the controller link: the controller's own event log, which keeps every event until the
    daemon acknowledges it, and the acknowledgements the daemon sent."""

    unavailable = False
    generation = 0

    def __init__(self):
        self.log = EventLog(threading.RLock(), max_events=10_000)
        self.acks: list[int] = []
        self.sent: list[tuple] = []  # everything else, in order

    def call(self, method, *args):
        if method == "fetch_events":
            return self.log.fetch(*args)
        if method in ("inventory", "running"):
            return []  # no GPUs to start anything on, and the run whose events it holds has ended
        raise AssertionError(f"unexpected call {method}")

    def send(self, method, *args):
        if method == "ack_events":
            self.acks.append(args[0])
            self.log.ack(args[0])
        else:
            self.sent.append((method, *args))


def running_job(daemon):
    """A job with an open run, started now, as the daemon leaves it after starting it."""
    store = daemon.store
    job = store.submit(store.validate("diffusion-train", {"steps": 5}))
    run = store.start_run(job.id, "node-a", "DE", ["w0"], None, "running in zone DE")
    return job.id, run.id, datetime.now(timezone.utc).timestamp()


def run_events(job_id, run_id, started_s):
    """A run's worker events: two progress reports and its end, 6 s and 6 kJ of GPU energy at 1 kW."""
    draws = samples(started_s, 1000.0, 10.0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    return [Progress(job_id=job_id, run_id=run_id, at=started_s + 2, progress={"step": 2}, samples=draws[:2]),
            Progress(job_id=job_id, run_id=run_id, at=started_s + 4, progress={"step": 4}, samples=draws[2:4]),
            finished(run_id, totals(6000.0, 6.0, started_s, cpu_energy_j=60.0), draws[4:],
                     result={"steps": 5})]


def recorded(engine, run_id):
    """The run as the database holds it (read directly, not through the proxy): status, energy, samples."""
    with make_session_factory(engine)() as session:
        run = session.get(Run, run_id)
        stored = session.scalars(select(PowerSample).where(PowerSample.run_id == run_id)
                                 .order_by(PowerSample.at)).all()
        runs_of_job = session.scalars(select(Run).where(Run.job_id == run.job_id)).all()
        return types.SimpleNamespace(status=run.status, energy=run.energy, job_state=run.job.state,
                                     samples=[(s.at, s.gpu_energy_j) for s in stored], runs=len(runs_of_job))


def assert_recorded_once(engine, run_id):
    """Succeeded once, its energy what its samples say, every sample stored once."""
    run = recorded(engine, run_id)
    assert (run.status, run.job_state, run.runs) == ("succeeded", "succeeded", 1)
    times = [at for at, _ in run.samples]
    assert len(times) == len(set(times)) == 6
    assert run.energy.gpu_energy_j == run.samples[-1][1] == 6000.0
    assert run.energy.cpu_energy_j == 60.0
    assert run.energy.emissions_g is not None and run.energy.emissions_g > 0


@pytest.mark.postgres
@pytest.mark.parametrize("cut", ["refuse", pytest.param("blackhole", marks=pytest.mark.slow)])
def test_events_are_acknowledged_only_once_committed_and_recorded_once_when_the_database_returns(
        postgres, tmp_path, cut):
    daemon = make_daemon(tmp_path, postgres.via)
    daemon.controller = controller = HeldEvents()
    try:
        job_id, run_id, started_s = running_job(daemon)
        for event in run_events(job_id, run_id, started_s):
            controller.log.append(event)

        # The database goes away right after the first event is committed.
        record = daemon.events.record

        def record_then_cut(event):
            outcome = record(event)
            getattr(postgres.proxy, cut)()
            daemon.events.record = record
            return outcome

        daemon.events.record = record_then_cut
        drained = bounded(lambda: daemon._drain_events(0, 0.0), 30.0)
        assert (drained.after, drained.finished, controller.acks) == (1, False, [1])
        assert isinstance(drained.stalled, DatabaseUnavailable)
        assert recorded(postgres.direct, run_id).status == "running"  # its end is still with the controller
        assert [seq for seq, _ in controller.log.fetch(0)] == [2, 3]

        again = bounded(lambda: daemon._drain_events(drained.after, 0.0), 30.0)  # still away: nothing moves
        assert (again.after, controller.acks) == (1, [1]) and again.stalled is not None

        postgres.proxy.forward()
        caught_up = daemon._drain_events(again.after, 0.0)
        assert (caught_up.after, caught_up.finished, caught_up.stalled, controller.acks) == (3, True, None, [1, 3])
        assert_recorded_once(postgres.direct, run_id)
    finally:
        daemon.engine.dispose()


@pytest.mark.postgres
def test_a_finish_cut_off_between_its_samples_and_its_end_stores_its_samples_once(postgres, tmp_path):
    daemon = make_daemon(tmp_path, postgres.via)
    daemon.controller = controller = HeldEvents()
    try:
        job_id, run_id, started_s = running_job(daemon)
        for event in run_events(job_id, run_id, started_s):
            controller.log.append(event)
        add_samples = daemon.store.add_samples

        def add_samples_then_cut(*args):  # the finish's samples are committed, its end is not
            add_samples(*args)
            postgres.proxy.refuse()
            daemon.store.add_samples = add_samples

        daemon.store.add_samples = add_samples_then_cut
        drained = daemon._drain_events(0, 0.0)
        assert (drained.after, controller.acks) == (2, [2]) and drained.stalled is not None
        assert len(recorded(postgres.direct, run_id).samples) == 6

        postgres.proxy.forward()
        assert daemon._drain_events(drained.after, 0.0).after == 3
        assert_recorded_once(postgres.direct, run_id)
    finally:
        daemon.engine.dispose()


@pytest.mark.postgres
def test_an_event_delivered_again_is_recorded_once(postgres, tmp_path):
    """A daemon that died after committing and before acknowledging gets the same events again."""
    daemon = make_daemon(tmp_path, postgres.via)
    daemon.controller = controller = HeldEvents()
    try:
        job_id, run_id, started_s = running_job(daemon)
        events = run_events(job_id, run_id, started_s)
        for event in events[:2]:
            daemon.handle_event(event)
        restarted = make_daemon(tmp_path, postgres.via)  # remembers nothing of the run's samples
        restarted.controller = controller
        for event in events + events:
            controller.log.append(event)
        assert restarted._drain_events(0, 0.0).after == 6
        assert_recorded_once(postgres.direct, run_id)
        restarted.engine.dispose()
    finally:
        daemon.engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_the_running_daemon_catches_up_by_itself_after_an_outage_and_its_tick_survives(postgres, tmp_path,
                                                                                       caplog):
    daemon = make_daemon(tmp_path, postgres.via)
    daemon.controller = controller = HeldEvents()
    caplog.set_level(logging.WARNING, logger="scheduler.daemon.db_outage")
    job_id, run_id, started_s = running_job(daemon)
    threads = [threading.Thread(target=daemon._event_loop, args=(0,), daemon=True),
               threading.Thread(target=daemon._tick_loop, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        postgres.proxy.blackhole()
        for event in run_events(job_id, run_id, started_s):  # the job ends while the database is away
            controller.log.append(event)
        for _ in range(3):  # ticks meet the outage too
            daemon.trigger_tick()
        poll(lambda: daemon.db_outage.failures >= 3, "the daemon to retry")
        assert controller.acks == [] and recorded(postgres.direct, run_id).status == "running"

        postgres.proxy.forward()
        poll(lambda: controller.acks and controller.acks[-1] == 3, "the events to be acknowledged")
        assert_recorded_once(postgres.direct, run_id)
        assert daemon.reconcile() == 0  # recorded as finished: nothing to requeue, so it never runs again
        assert all(thread.is_alive() for thread in threads)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("the database is unavailable" in m for m in messages) == 1  # logged once, not per retry
        assert sum("the database is back" in m for m in messages) == 1
    finally:
        daemon._stopping.set()
        daemon._tick_wanted.set()
        for thread in threads:
            thread.join(timeout=30)
        daemon.engine.dispose()


def poll(condition, what: str, limit_s: float = CATCH_UP_S) -> None:
    give_up_at = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < give_up_at, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.postgres
def test_a_time_limit_or_a_suspension_due_during_an_outage_is_armed_again_not_dropped(postgres, tmp_path):
    daemon = make_daemon(tmp_path, postgres.via)
    daemon.controller = controller = HeldEvents()
    armed = []
    daemon.timers = types.SimpleNamespace(time_limit=lambda *args: armed.append(("time_limit", *args)),
                                          suspend_at=lambda *args: armed.append(("suspend_at", *args)))
    try:
        store = daemon.store
        job_id = store.submit(store.validate("diffusion-train", {"steps": 5}, time_limit_s=60.0)).id
        run_id = store.start_run(job_id, "node-a", "DE", ["w0"], None, "running in zone DE").id
        postgres.proxy.refuse()
        daemon._time_up(job_id, run_id)
        daemon._suspend(job_id, run_id)
        assert [(what, job, run) for what, job, run, _ in armed] == [("time_limit", job_id, run_id),
                                                                   ("suspend_at", job_id, run_id)]
        assert controller.sent == []

        postgres.proxy.forward()
        daemon._time_up(*armed[0][1:3])  # the timer armed again fires after the database is back
        assert controller.sent == [("cancel_job", job_id)]
        assert daemon.store.get(job_id).cancel_requested
    finally:
        daemon.engine.dispose()

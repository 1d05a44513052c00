"""Group commit of submissions: submissions made together share one transaction, each is answered only once
that transaction has committed, and one the database refuses fails alone; on real SQLite and PostgreSQL.

The batches are made deterministic by holding the first write until the others have queued behind it.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
from fakes import FakeClock
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

import scheduler.store.jobs as jobs_module
from scheduler.errors import DatabaseUnavailable, KeyReused
from scheduler.store.engine import make_engine, make_session_factory
from scheduler.store.group_commit import GroupCommit
from scheduler.store.jobs import JobStore
from scheduler.store.models import Job, JobEvent

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TRAIN = {"steps": 10, "image_size": 8}
POLL_LIMIT_S = 30.0


def wait_until(condition, what: str) -> None:
    give_up_at = time.monotonic() + POLL_LIMIT_S
    while not condition():
        if time.monotonic() > give_up_at:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def in_threads(calls) -> list:
    """Run each call in its own thread; their results (or exceptions) in order."""
    outcomes: list = [None] * len(calls)

    def run(i, call):
        try:
            outcomes[i] = call()
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    return threads, outcomes


class HeldWrites:
    """A write function for GroupCommit that records its batches and holds the first until released."""

    def __init__(self, outcome=lambda item: item * 10):
        self.batches: list[list] = []
        self.committed: set = set()
        self.release = threading.Event()
        self.outcome = outcome

    def __call__(self, items):
        self.batches.append(list(items))
        if len(self.batches) == 1:
            assert self.release.wait(POLL_LIMIT_S)
        outcomes = [self.outcome(item) for item in items]
        self.committed.update(items)  # "committed": only now may a caller be answered
        return outcomes


# --- the mechanism -------------------------------------------------------------------------------------------


def test_a_lone_caller_is_written_at_once():
    batches = []
    group = GroupCommit(lambda items: batches.append(list(items)) or [i + 1 for i in items])
    assert group(1) == 2 and group(5) == 6
    assert batches == [[1], [5]]


def test_callers_that_arrive_during_a_write_share_the_next_one_and_are_answered_after_it():
    writes = HeldWrites()
    group = GroupCommit(writes)
    answered_after_commit = []

    def call(item):
        result = group(item)
        answered_after_commit.append(item in writes.committed)
        return result

    first, first_outcome = in_threads([lambda: call(0)])
    wait_until(lambda: len(writes.batches) == 1, "the first write")
    rest, outcomes = in_threads([lambda i=i: call(i) for i in range(1, 6)])
    wait_until(lambda: group.queued == 5, "five callers queued behind the first write")
    assert all(t.is_alive() for t in first + rest)  # nobody answered while the first write is under way
    writes.release.set()
    for t in first + rest:
        t.join()
    assert writes.batches == [[0], [1, 2, 3, 4, 5]] or (
        writes.batches[0] == [0] and sorted(writes.batches[1]) == [1, 2, 3, 4, 5])
    assert first_outcome == [0] and outcomes == [10, 20, 30, 40, 50]
    assert answered_after_commit == [True] * 6


def test_an_item_the_write_refuses_fails_alone():
    writes = HeldWrites(outcome=lambda item: ValueError(f"bad {item}") if item == 3 else item * 10)
    group = GroupCommit(writes)
    first, _ = in_threads([lambda: group(0)])
    wait_until(lambda: len(writes.batches) == 1, "the first write")
    rest, outcomes = in_threads([lambda i=i: group(i) for i in range(1, 5)])
    wait_until(lambda: group.queued == 4, "four callers queued")
    writes.release.set()
    for t in first + rest:
        t.join()
    assert len(writes.batches) == 2  # the refused item was in a batch with the others
    assert outcomes[0] == 10 and outcomes[1] == 20 and outcomes[3] == 40
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "bad 3"


def test_a_failed_write_fails_its_batch_only():
    calls = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise DatabaseUnavailable("the database is unavailable: gone")
        return [i for i in items]

    group = GroupCommit(write)
    with pytest.raises(DatabaseUnavailable):
        group(1)
    assert group(2) == 2  # the next batch is written as usual


def test_a_queue_longer_than_a_batch_takes_more_than_one_turn():
    writes = HeldWrites(outcome=lambda item: item)
    group = GroupCommit(writes, max_batch=2)
    first, _ = in_threads([lambda: group(0)])
    wait_until(lambda: len(writes.batches) == 1, "the first write")
    rest, outcomes = in_threads([lambda i=i: group(i) for i in range(1, 6)])
    wait_until(lambda: group.queued == 5, "five callers queued")
    writes.release.set()
    for t in first + rest:
        t.join()
    assert outcomes == [1, 2, 3, 4, 5]
    assert [len(b) for b in writes.batches] == [1, 2, 2, 1]


# --- on the database --------------------------------------------------------------------------------------


@pytest.fixture
def engine(upgraded_db_url):
    engine = make_engine(upgraded_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine, tmp_path):
    return JobStore(make_session_factory(engine), FakeClock(T0), tmp_path / "jobs")


@pytest.fixture
def ann_id(engine):
    """A user's id (idempotency keys are per user)."""
    from scheduler.store.auth import TokenStore

    auth = TokenStore(make_session_factory(engine), FakeClock(T0))
    auth.create_token("ann")
    return auth.user_id("ann")


@pytest.fixture
def held_store(store, monkeypatch):
    """The store, its first batch insert held until ``release`` is set; ``batches``: each insert's size."""
    real = jobs_module.insert_new_jobs
    batches: list[int] = []
    release = threading.Event()

    def held(engine, batch):
        batches.append(len(batch))
        if len(batches) == 1:
            assert release.wait(POLL_LIMIT_S)
        return real(engine, batch)

    monkeypatch.setattr(jobs_module, "insert_new_jobs", held)
    store.held_batches, store.release = batches, release
    return store


def submit_together(store, first, rest):
    """Submit ``first`` alone (its insert is held), then ``rest`` behind it; release; the outcomes of rest."""
    lead, lead_outcome = in_threads([first])
    wait_until(lambda: len(store.held_batches) == 1, "the first insert")
    threads, outcomes = in_threads(rest)
    wait_until(lambda: store.submit_batches.queued == len(rest), "the others queued behind it")
    store.release.set()
    for t in lead + threads:
        t.join()
    return lead_outcome[0], outcomes


def counts(engine) -> tuple[int, int]:
    with make_session_factory(engine)() as session:
        return (session.scalar(select(func.count()).select_from(Job)),
                session.scalar(select(func.count()).select_from(JobEvent)))


def test_submissions_made_together_share_one_insert_and_are_each_committed(held_store, engine):
    store = held_store
    seen_committed = []
    other_engine = make_engine(str(engine.url.render_as_string(hide_password=False)))

    def submit(i):
        job, created = store.submit_once(store.validate("diffusion-train", {**TRAIN, "steps": 10 + i},
                                                        hold=i % 2 == 0))
        with make_session_factory(other_engine)() as session:  # another connection sees it: committed
            seen_committed.append(session.get(Job, job.id) is not None)
        return job, created

    lead, outcomes = submit_together(store, lambda: submit(0), [lambda i=i: submit(i) for i in range(1, 7)])
    other_engine.dispose()
    assert store.held_batches == [1, 6]
    assert all(created for _, created in [lead, *outcomes])
    assert seen_committed == [True] * 7
    assert counts(engine) == (7, 7)
    for i, (job, _) in enumerate([lead, *outcomes]):
        stored = store.get(job.id)
        assert stored.spec["steps"] == 10 + i and stored.held == (i % 2 == 0)
        assert [(e.from_state, e.to_state, e.reason) for e in stored.events] == [
            (None, "pending", "submitted, held by the user" if i % 2 == 0 else "submitted")]
        assert stored.submitted_at == T0 and stored.reason == job.reason


def test_one_key_in_a_batch_makes_one_job_and_a_reused_key_is_refused(held_store, engine, ann_id):
    store = held_store
    same = store.validate("diffusion-train", TRAIN, idempotency_key="nightly")
    other = store.validate("diffusion-train", {**TRAIN, "steps": 99}, idempotency_key="nightly")
    lead, outcomes = submit_together(
        store, lambda: store.submit_once(same, ann_id),
        [lambda: store.submit_once(same, ann_id), lambda: store.submit_once(same, ann_id),
         lambda: store.submit_once(other, ann_id), lambda: store.submit_once(store.validate(
             "diffusion-train", TRAIN, idempotency_key="fresh"), ann_id)])
    assert store.held_batches == [1, 4]
    assert lead[1] is True
    assert [(job.id, created) for job, created in outcomes[:2]] == [(lead[0].id, False)] * 2  # the retries
    assert isinstance(outcomes[2], KeyReused) and lead[0].id in str(outcomes[2])
    assert outcomes[3][1] is True and outcomes[3][0].id != lead[0].id
    assert counts(engine) == (2, 2)


def test_a_key_repeated_within_one_batch_makes_one_job(held_store, engine, ann_id):
    store = held_store
    same = store.validate("diffusion-train", TRAIN, idempotency_key="race")
    lead, outcomes = submit_together(store, lambda: store.submit_once(store.validate("diffusion-train", TRAIN)),
                                     [lambda: store.submit_once(same, ann_id) for _ in range(4)])
    assert store.held_batches == [1, 4]
    assert len({job.id for job, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False, False, False, True]
    assert counts(engine) == (2, 2)


def test_a_submission_the_database_refuses_fails_alone_in_its_batch(held_store, engine):
    store = held_store
    good = store.validate("diffusion-train", TRAIN)
    lead, outcomes = submit_together(
        store, lambda: store.submit_once(good),
        [lambda: store.submit_once(good), lambda: store.submit_once(good, user_id=987654),  # no such user
         lambda: store.submit_once(good)])
    assert store.held_batches[:2] == [1, 3]  # then each of the refused batch's three alone
    assert isinstance(outcomes[1], IntegrityError)
    assert outcomes[0][1] is True and outcomes[2][1] is True and lead[1] is True
    assert counts(engine) == (3, 3)


# --- the node memory check: asked once for many submissions, at once again when a node is recorded ------------


def test_the_largest_nodes_memory_is_asked_once_for_many_submissions_and_again_once_a_node_is_recorded(store,
                                                                                                       engine):
    from sqlalchemy import event

    from scheduler.errors import InvalidRequest
    from scheduler.store.inventory import record_inventory

    asked = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: asked.append(1) if "FROM nodes" in statement else None)
    for _ in range(5):
        store.validate("synthetic", {"memory_mib": 4096})
    assert len(asked) == 1  # no node has said: remembered as such, not asked five times
    record_inventory(store.sessions, [{"worker_id": "w0", "node_id": "a", "zone": "DE", "memory_bytes": 2 << 30}],
                     T0)
    with pytest.raises(InvalidRequest) as refused:  # the node counts at once
        store.validate("synthetic", {"memory_mib": 4096})
    assert refused.value.field == "spec" and "(2.0 GiB)" in str(refused.value)
    before = len(asked)
    for _ in range(5):
        store.validate("synthetic", {"memory_mib": 100})
    assert len(asked) - before <= 1

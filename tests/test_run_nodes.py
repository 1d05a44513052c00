"""A gang's per-node breakdown is kept with each of its runs, however the run ended (succeeded, failed, lost,
suspended), shown in the run's view and by ``wattsched status JOB``; a succeeded run's is also in its job's
result, as before. On real SQLite and PostgreSQL, without Ray: the store is fed what the controller reports."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock
from test_api_migrations import check_new_runs_column

from scheduler.cli.tables import render_job
from scheduler.client.models import Job
from scheduler.store.engine import make_engine, make_session_factory
from scheduler.store.job_state import RunStatus
from scheduler.store.jobs import JobStore
from scheduler.store.views import job_view

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
SPEC = {"steps": 10}


def gang_nodes(exit_status: str, gpu_j: float) -> list[dict]:
    """The breakdown as scheduler.cluster.gang reports it: one entry per node of a 2-node gang."""
    return [{"node_id": f"node-{rank}", "node_rank": rank, "ranks": [2 * rank, 2 * rank + 1],
             "gpu_energy_j": gpu_j + rank, "cpu_energy_j": 10.0, "samples": 3, "exit_status": exit_status}
            for rank in (0, 1)]


@pytest.fixture
def store(upgraded_db_url, tmp_path):
    engine = make_engine(upgraded_db_url)
    yield JobStore(make_session_factory(engine), FakeClock(T0), tmp_path / "jobs")
    engine.dispose()


def end_run(store, job_id, status: RunStatus, nodes: list[dict] | None):
    run = store.start_run(job_id, "node-0", "DE", ["w0", "w1"], None, "go")
    store.clock.advance(seconds=30)
    result = None if nodes is None else {"nodes": nodes}
    store.finish_run(run.id, status, 0 if status is RunStatus.SUCCEEDED else 1, f"ended {status.value}", None,
                     result)
    return run.id


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.LOST, RunStatus.SUSPENDED, RunStatus.SUCCEEDED])
def test_each_run_keeps_its_nodes_however_it_ended(store, status):
    job = store.submit(store.validate("synthetic", SPEC, interruptible=True, deadline=T0 + timedelta(days=1)))
    nodes = gang_nodes(status.value, 100.0)
    end_run(store, job.id, status, nodes)

    view = job_view(store.get(job.id))
    [run] = view["runs"]
    assert run["exit_status"] == status.value and run["nodes"] == nodes
    # the job's result keeps a succeeded run's breakdown, as before; other ends leave it unset
    assert view["result"] == ({"nodes": nodes} if status is RunStatus.SUCCEEDED else None)


def test_a_run_on_one_node_has_no_nodes(store):
    job = store.submit(store.validate("synthetic", SPEC))
    end_run(store, job.id, RunStatus.FAILED, None)
    assert job_view(store.get(job.id))["runs"][0]["nodes"] is None


def test_status_prints_each_runs_nodes_once(store):
    job = store.submit(store.validate("synthetic", SPEC, interruptible=True, deadline=T0 + timedelta(days=1)))
    end_run(store, job.id, RunStatus.FAILED, gang_nodes("failed", 500.0))
    end_run(store, job.id, RunStatus.SUCCEEDED, gang_nodes("succeeded", 700.0))

    text_ = render_job(Job.from_dict(job_view(store.get(job.id))))

    failed = text_.split("nodes of attempt 1 (failed)\n")[1].split("\n\n")[0].splitlines()
    assert failed[0].startswith("  node 0  node-0 ranks 0,1: 510 J (gpu 500 J, cpu 10") and "failed" in failed[0]
    assert "ranks 2,3: 511 J" in failed[1]
    succeeded = text_.split("nodes of attempt 2 (succeeded)\n")[1].splitlines()
    assert "ranks 0,1: 710 J" in succeeded[0] and "succeeded" in succeeded[0]
    assert text_.count("ranks 0,1:") == 2  # the job's result.nodes is the succeeded run's: not printed again


def test_status_of_a_job_whose_runs_predate_their_nodes_prints_the_results(store):
    job = store.submit(store.validate("synthetic", SPEC))
    end_run(store, job.id, RunStatus.SUCCEEDED, gang_nodes("succeeded", 700.0))
    view = job_view(store.get(job.id))
    for run in view["runs"]:
        run["nodes"] = None  # as a run stored before 0010 reads

    lines = render_job(Job.from_dict(view)).splitlines()

    assert any(line.startswith("  node 0") and "ranks 0,1: 710 J" in line for line in lines)
    assert not any(line.startswith("nodes of attempt") for line in lines)


def test_0010_adds_the_runs_nodes_and_downgrades(db_url):
    check_new_runs_column(db_url, "0009", "nodes", "failed")
"""Why a run was lost reads in text output (`wattsched status JOB` and `wattsched list`), not only in JSON.

The lost run is made as the daemon makes it after a restart (reconcile against a controller that runs nothing), on
real SQLite and PostgreSQL; the text is rendered from the API's view of the job as the CLI receives it.
"""

from __future__ import annotations

from test_lost_runs import daemon  # noqa: F401  (the fixture: a daemon whose controller runs nothing)

from scheduler.cli.tables import render_job, render_jobs
from scheduler.client.models import Job
from scheduler.daemon.daemon import LOST_WHILE_AWAY
from scheduler.store.views import job_view


def as_cli_sees_it(daemon, job_id) -> Job:
    return Job.from_dict(job_view(daemon.store.get(job_id)))


def test_a_lost_runs_reason_is_in_status_and_in_list_also_once_the_job_runs_again(daemon):
    store = daemon.store
    job_id = store.submit(store.validate("diffusion-train", {"steps": 5})).id
    store.start_run(job_id, "node-a", "DE", ["w0"], None, "running in zone DE")
    assert daemon.reconcile(LOST_WHILE_AWAY) == 1

    queued = as_cli_sees_it(daemon, job_id)
    runs_table = render_job(queued).split("\nruns\n")[1]
    assert "why" in runs_table.splitlines()[0]
    assert "lost" in runs_table and LOST_WHILE_AWAY in runs_table
    assert render_jobs([queued]).count(LOST_WHILE_AWAY) == 1  # the reason says it already: not twice

    store.start_run(job_id, "node-b", "DE", ["w1"], None, "running in zone DE")
    running = as_cli_sees_it(daemon, job_id)
    assert LOST_WHILE_AWAY not in (running.reason or "")
    assert f"(last run lost: {LOST_WHILE_AWAY})" in render_jobs([running])
    assert LOST_WHILE_AWAY in render_job(running)


def test_a_job_without_a_lost_run_reads_as_before(daemon):
    store = daemon.store
    job_id = store.submit(store.validate("diffusion-train", {"steps": 5})).id
    store.start_run(job_id, "node-a", "DE", ["w0"], None, "running in zone DE")
    job = as_cli_sees_it(daemon, job_id)
    assert "last run lost" not in render_jobs([job])
    assert render_job(job).split("\nruns\n")[1].splitlines()[-1].rstrip().endswith("-")  # no why yet

"""After a crash, a run's record says what happened: a lost run keeps the energy its samples measured and ends at its
last sample, and a run that ended while no daemon listened ends when its Finished event says, not when a daemon
heard of it. Driven without Ray: a controller double answers what it runs; events are recorded as the event
thread records them. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock
from worker_events import finished, samples, totals

from scheduler.config import Settings
from scheduler.daemon.daemon import LOST_WHILE_AWAY, Daemon
from scheduler.store.views import energy_view, history_row, job_view
from workers.events import ExitStatus, Finished, Progress, Started

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class RunsNothing:
    """Stands in for a controller that restarted: it runs nothing, so every open run is lost."""

    def call(self, method, *args):
        assert method == "running"
        return []


@pytest.fixture
def daemon(upgraded_db_url, tmp_path):
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=FakeClock(T0))
    daemon.controller = RunsNothing()
    yield daemon
    daemon.engine.dispose()


def start(daemon):
    store = daemon.store
    job = store.submit(store.validate("diffusion-train", {"steps": 5}))
    return job.id, store.start_run(job.id, "node-a", "DE", ["w0"], None, "running in zone DE").id


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stored_energy_j(daemon, run_id):
    """The GPU and CPU energy of a run's last stored sample (cumulative: what the samples measured)."""
    last = daemon.store.stored_samples(run_id)[-1]
    return last.gpu_energy_j, last.cpu_energy_j


@pytest.mark.parametrize("seen_start", [True, False], ids=["start-seen", "daemon-restarted"])
def test_a_lost_run_keeps_the_energy_its_samples_measured_and_ends_at_its_last_sample(daemon, seen_start):
    job_id, run_id = start(daemon)
    t0 = T0.timestamp()
    if seen_start:
        daemon.handle_event(Started(job_id=job_id, run_id=run_id, worker_id="w0", node_id="node-a", gpu_ids=(0,),
                                    pid=1, at=t0, gpu_method="simulated", cpu_method="estimate"))
    draws = samples(t0, 300.0, 20.0, [10.0, 20.0, 30.0, 40.0])  # 40 s at 300 W GPU and 20 W CPU
    for first in (0, 2):
        daemon.handle_event(Progress(job_id=job_id, run_id=run_id, at=t0 + 10 * (first + 2), progress={"step": first},
                                     samples=draws[first:first + 2]))
    daemon.clock.now = at(225)  # the daemon comes back long after the run's last sign of life

    assert daemon.reconcile(LOST_WHILE_AWAY) == 1
    job = daemon.store.get(job_id)
    (run,) = job.runs
    assert (run.status, run.ended_at) == ("lost", at(40))  # not the restart time
    assert job.state == "pending" and job.events[-1].at == at(225)  # queued again when the loss was noticed
    energy = run.energy
    assert (energy.gpu_energy_j, energy.cpu_energy_j) == stored_energy_j(daemon, run_id) == (12000.0, 800.0)
    assert energy.duration_s == 40.0 and energy.avg_power_w == 320.0 and energy.peak_power_w == 320.0
    expected_methods = ("simulated", "estimate") if seen_start else ("unknown", "unknown")
    assert (energy.gpu_method, energy.cpu_method) == expected_methods
    assert energy.emissions_g > 0 and energy.counterfactual_emissions_g is not None
    # Counted with the job: its energy and emissions, as its view and the history show them.
    assert job_view(job)["energy"]["energy_j"] == 12800.0
    assert energy_view(daemon.store.history()[0].runs)["emissions_g"] == energy.emissions_g
    assert daemon.reconcile(LOST_WHILE_AWAY) == 0  # once


def test_a_lost_run_without_samples_ends_at_its_start_with_no_energy(daemon):
    job_id, run_id = start(daemon)
    daemon.clock.now = at(600)
    assert daemon.reconcile(LOST_WHILE_AWAY) == 1
    (run,) = daemon.store.get(job_id).runs
    assert (run.status, run.ended_at, run.energy) == ("lost", T0, None)


def test_a_run_that_ended_while_no_daemon_listened_ends_when_its_finished_event_says(daemon):
    job_id, run_id = start(daemon)
    t0 = T0.timestamp()
    daemon.clock.now = at(306)  # the restarted daemon reads the event 81 s after the run ended
    draws = samples(t0, 300.0, 20.0, [100.0, 200.0, 225.0])
    assert daemon.handle_event(finished(run_id, totals(67500.0, 225.0, t0, cpu_energy_j=4500.0), draws))
    job = daemon.store.get(job_id)
    (run,) = job.runs
    assert (run.status, run.ended_at, job.finished_at) == ("succeeded", at(225), at(225))
    assert history_row(job)["duration_s"] == 225.0  # a 225 s run, not the 306 s until a daemon heard of it
    assert (run.energy.gpu_energy_j, run.energy.cpu_energy_j) == stored_energy_j(daemon, run_id)


def test_a_run_the_controller_declared_lost_ends_at_its_last_sample(daemon):
    job_id, run_id = start(daemon)
    t0 = T0.timestamp()
    daemon.clock.now = at(400)
    draws = samples(t0, 300.0, 20.0, [50.0, 100.0])
    daemon.handle_event(Progress(job_id=job_id, run_id=run_id, at=t0 + 100, samples=draws))
    partial = totals(30000.0, 100.0, t0, cpu_energy_j=2000.0)  # up to the last sample the controller saw
    daemon.handle_event(Finished(job_id=job_id, run_id=run_id, worker_id="w0", at=t0 + 390,
                                 exit_status=ExitStatus.LOST, error="node node-a is gone", energy=partial,
                                 energy_partial=True))
    (run,) = daemon.store.get(job_id).runs
    assert (run.status, run.ended_at) == ("lost", at(100))
    assert (run.energy.gpu_energy_j, run.energy.cpu_energy_j) == stored_energy_j(daemon, run_id)


def test_an_end_time_from_a_clock_ahead_of_the_daemons_is_kept_within_the_run(daemon):
    job_id, run_id = start(daemon)
    daemon.clock.now = at(60)
    daemon.handle_event(finished(run_id, totals(100.0, 3600.0, T0.timestamp())))  # says it ended at T0 + 1 h
    (run,) = daemon.store.get(job_id).runs
    assert run.ended_at == at(60)

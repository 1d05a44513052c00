"""End to end: the client submits to a real daemon on a real local Ray; jobs really run and are metered.

The jobs are ``synthetic`` (paced steps that checkpoint, no torch) but for the first test, which trains and samples
a real diffusion model.
"""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon_fixtures import (  # noqa: F401  (fixtures)
    ENDLESS_JOB,
    JOB_TIMEOUT_S,
    SHORT_JOB,
    TINY_TRAIN,
    client,
    daemon,
    synthetic_job,
    wait_until_running,
)
from scheduler.store.models import PowerSample, Run, RunEnergy
from workers.kinds.synthetic import CHECKPOINT_FILE

pytestmark = pytest.mark.ray


def energies_of(daemon, job_id):
    with daemon.store.sessions() as session:
        return session.execute(
            select(Run, RunEnergy).join(RunEnergy, RunEnergy.run_id == Run.id).where(Run.job_id == job_id)
        ).all()


def test_train_then_sample_succeed_with_metered_energy_and_emissions(daemon, client):
    train = client.submit("diffusion-train", TINY_TRAIN, zones=["FR"])
    train = client.wait(train.id, timeout=JOB_TIMEOUT_S)
    assert train.state == "succeeded", train.raw
    sample = client.submit("diffusion-sample", {"checkpoint": f"job:{train.id}", "sampler": "ddim",
                                                "num_inference_steps": 4, "num_images": 4})
    sample = client.wait(sample.id, timeout=JOB_TIMEOUT_S)
    assert sample.state == "succeeded", sample.raw
    assert sample.result["num_images"] == 4

    for job, zone in ((train, "FR"), (sample, None)):
        rows = energies_of(daemon, job.id)
        assert len(rows) == 1
        run, energy = rows[0]
        assert run.status == "succeeded" and run.ended_at > run.started_at
        if zone:
            assert run.zone == zone
        assert energy.gpu_energy_j > 0 and energy.gpu_method == "simulated"
        assert energy.cpu_energy_j > 0 and energy.cpu_method in ("estimate", "rapl")
        assert energy.emissions_g > 0 and energy.carbon_source == "synthetic"
        assert energy.peak_power_w >= energy.avg_power_w > 0
        with daemon.store.sessions() as session:
            samples = session.scalars(select(PowerSample).where(PowerSample.run_id == run.id)).all()
        assert samples and max(s.gpu_energy_j for s in samples) <= energy.gpu_energy_j + 1e-6

    history = client.history()
    rows = {r.job_id: r for r in history.jobs}
    assert rows[train.id].energy_j > 0 and "simulated" in rows[train.id].methods
    assert history.totals.energy_j >= rows[train.id].energy_j + rows[sample.id].energy_j - 1e-6


def test_cancel_stops_a_running_job_and_keeps_its_partial_energy(daemon, client):
    job = wait_until_running(client, client.submit("synthetic", ENDLESS_JOB))
    client.cancel(job.id)
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    assert job.state == "cancelled"
    (run, energy), = energies_of(daemon, job.id)
    assert run.status == "cancelled"
    assert energy.gpu_energy_j > 0 and energy.emissions_g > 0
    assert [e.to_state for e in daemon.store.get(job.id).events] == ["pending", "running", "cancelled"]


def test_a_time_limit_stops_the_job_and_says_so(daemon, client):
    job = client.submit("synthetic", ENDLESS_JOB, time_limit_s=3)
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    assert job.state == "cancelled" and job.reason == "time limit of 3 s reached"
    (run, energy), = energies_of(daemon, job.id)
    # at least its limit; how much longer depends on how busy the machine is (the job itself would never end)
    assert 3 <= (run.ended_at - run.started_at).total_seconds() and energy.gpu_energy_j > 0


def test_a_failing_job_reports_why(daemon, client):
    job = client.submit("synthetic", SHORT_JOB, hold=True)
    # a checkpoint the job cannot read: it fails at its start, and says so
    workdir = Path(job.raw["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / CHECKPOINT_FILE).write_text("not json")
    client.release(job.id)
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    assert job.state == "failed"
    assert "checkpoint" in job.reason.lower()


def test_an_interruptible_job_is_suspended_at_a_checkpoint_and_resumed(daemon, client):
    # long enough to be still running when the suspension reaches it on a busy machine
    spec = synthetic_job(15.0)
    job = client.submit("synthetic", spec, interruptible=True)
    job = wait_until_running(client, job)
    run_id = daemon.store.get(job.id).runs[-1].id
    daemon._suspend(job.id, run_id)  # what the scheduler does when a planned clean stretch ends
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)  # fifo resumes it at once
    assert job.state == "succeeded", job.raw
    events = [e.to_state for e in daemon.store.get(job.id).events]
    assert events[:4] == ["pending", "running", "suspended", "running"]
    runs = daemon.store.get(job.id).runs
    assert [r.status for r in runs] == ["suspended", "succeeded"]
    assert all(r.energy.gpu_energy_j > 0 for r in runs)
    assert 0 < job.result["resumed_from_step"] < spec["steps"] and job.result["steps_done"] == spec["steps"]


def test_runs_the_controller_does_not_know_are_requeued(daemon, client):
    store = daemon.store
    job = store.submit(store.validate("synthetic", SHORT_JOB, hold=True))  # held: no tick takes it
    # a run the database believes in, as if its controller had died with it
    store.start_run(job.id, "gone-node", "DE", ["gone-gpu"], None, "started before a crash")
    assert daemon.reconcile() == 1
    assert store.get(job.id).state == "pending" and "queued again" in store.get(job.id).reason
    daemon.release(job.id)
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    assert job.state == "succeeded"
    assert [r.status for r in store.get(job.id).runs] == ["lost", "succeeded"]
    assert daemon.reconcile() == 0


def test_a_restarted_daemon_reattaches_and_records_jobs_that_ran_meanwhile(daemon):
    """The controller is detached: jobs outlive the daemon, and a new daemon picks up their events."""
    from scheduler.client import Client
    from scheduler.daemon.daemon import Daemon

    first = Client(url=daemon.url, token=daemon.token)
    job = wait_until_running(first, first.submit("synthetic", ENDLESS_JOB))
    daemon.stop()

    second = Daemon(daemon.settings).start()
    try:
        client = Client(url=second.url, token=second.token)
        assert client.get(job.id).state == "running"
        assert any(g["busy_job"] == job.id for g in client.status()["gpus"])
        client.cancel(job.id)
        job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
        assert job.state == "cancelled"
        assert job.energy is not None and job.energy.gpu_energy_j > 0
    finally:
        second.stop()


def test_a_daemon_on_real_providers_degrades_visibly_keeps_scheduling_and_recovers(
        daemon, tmp_path, monkeypatch, capsys):
    """Issue 4's 'done when': zones on emulated Electricity Maps, WattTime and UK APIs over loopback."""
    from carbon_emulators import ElectricityMapsEmulator, UkCarbonEmulator, WattTimeEmulator

    from scheduler.cli.commands import main as cli
    from scheduler.client import Client
    from scheduler.clock import utc_now
    from scheduler.daemon.daemon import Daemon

    daemon.stop()  # the module's daemon; this test runs its own on the same Ray and database
    em, wt, uk = (ElectricityMapsEmulator(utc_now).start(), WattTimeEmulator(utc_now).start(),
                  UkCarbonEmulator(utc_now).start())
    monkeypatch.setenv("TEST_EM_TOKEN", "em-secret-token")
    (tmp_path / "wt.password").write_text("wt-secret-password")
    config = tmp_path / "carbon.toml"
    config.write_text(f"""
[providers.em]
kind = "electricitymaps"
base_url = "{em.url}"
token_env = "TEST_EM_TOKEN"
timeout_s = 0.5
[providers.wt]
kind = "watttime"
base_url = "{wt.url}"
username = "alice"
password_file = "{tmp_path / 'wt.password'}"
timeout_s = 0.5
[providers.uk]
kind = "ukcarbon"
base_url = "{uk.url}"
timeout_s = 0.5
[zones.DE]
provider = "em"
[zones.FR]
provider = "wt"
region = "CAISO_NORTH"
[zones.GB]
provider = "uk"
region = "national"
""")
    settings = replace(daemon.settings, carbon_config=str(config))
    skew = [timedelta(0)]  # the daemon's clock, which the test moves past the provider's retry backoff
    carbon_daemon = Daemon(settings, clock=lambda: utc_now() + skew[0]).start()
    try:
        client = Client(url=carbon_daemon.url, token=carbon_daemon.token)
        carbon_daemon.refresh_carbon()
        zones = {z["zone"]: z for z in client.carbon(duration_s=7200)}
        assert {z: zones[z]["state"] for z in ("DE", "FR", "GB")} == {"DE": "ok", "FR": "ok", "GB": "ok"}
        assert zones["DE"]["source"] == "electricitymaps:lifecycle" and zones["DE"]["basis"] == "actual"
        assert zones["DE"]["cleanest_window"] is not None

        em.stop()  # the provider dies mid-run
        carbon_daemon.refresh_carbon()
        de = client.carbon(zone="DE")[0]
        assert de["state"] == "degraded" and de["reason"]
        status = client.status()
        assert any(c["zone"] == "DE" and c["state"] == "degraded" for c in status["carbon"])
        assert cli(["--url", carbon_daemon.url, "--token", carbon_daemon.token, "carbon", "DE",
                    "--duration", "2h"]) == 0
        printed = capsys.readouterr().out
        assert "degraded" in printed and "cleanest window" in printed

        job = client.wait(client.submit("synthetic", SHORT_JOB, zones=["DE"]).id, timeout=JOB_TIMEOUT_S)
        assert job.state == "succeeded"  # scheduling goes on
        assert job.energy.emissions_g > 0 and "electricitymaps" in job.energy.carbon_source

        em.start()  # restored; the next refresh after the failed zone's backoff recovers it
        skew[0] = timedelta(minutes=10)
        carbon_daemon.refresh_carbon()
        assert client.carbon(zone="DE")[0]["state"] == "ok"
    finally:
        carbon_daemon.stop()
        em.stop()

    # cached data survives a restart, even with the provider down
    restarted = Daemon(settings)
    try:
        reading = restarted.signal.reading("DE", utc_now().timestamp())
        assert reading.source == "electricitymaps:lifecycle" and reading.basis == "actual"
    finally:
        restarted.engine.dispose()
        wt.stop()
        uk.stop()

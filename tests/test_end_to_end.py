"""End to end: the client submits to a real daemon on a real local Ray; jobs really run and are metered."""

from dataclasses import replace

import pytest
from sqlalchemy import select

from scheduler.config import Settings
from scheduler.db.models import PowerSample, Run, RunEnergy

ray = pytest.importorskip("ray")

TINY_TRAIN = {"image_size": 8, "steps": 12, "batch_size": 8, "channels": [8, 16], "checkpoint_every": 6,
              "num_train_timesteps": 50}
LONG_TRAIN = {**TINY_TRAIN, "steps": 100000, "checkpoint_every": 1000}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from scheduler.controller import shutdown_controller
    from scheduler.daemon import Daemon

    if ray.is_initialized():
        ray.shutdown()
    settings = replace(Settings.from_env(environ={}), data_dir=tmp_path_factory.mktemp("wattsched"), port=0,
                       logical_gpus=2, sample_interval_s=0.2)
    daemon = Daemon(settings).start()
    yield daemon
    daemon.stop()
    shutdown_controller()
    ray.shutdown()


@pytest.fixture
def client(daemon):
    from scheduler.client import Client

    return Client(url=daemon.url, token=daemon.token)


def wait_until_running(client, job):
    """Poll (with the long-poll endpoint as the pause) until the job runs and has reported progress."""
    from scheduler.client import WaitTimeout

    while not (job.state == "running" and job.raw.get("progress")):
        assert job.state in ("pending", "running"), job.raw
        try:
            client.wait(job.id, timeout=0.5)
        except WaitTimeout:
            pass
        job = client.get(job.id)
    return job


def energies_of(daemon, job_id):
    with daemon.store.sessions() as session:
        return session.execute(
            select(Run, RunEnergy).join(RunEnergy, RunEnergy.run_id == Run.id).where(Run.job_id == job_id)
        ).all()


def test_train_then_sample_succeed_with_metered_energy_and_emissions(daemon, client):
    train = client.submit("diffusion-train", TINY_TRAIN, zones=["FR"])
    train = client.wait(train.id, timeout=120)
    assert train.state == "succeeded", train.raw
    sample = client.submit("diffusion-sample", {"checkpoint": f"job:{train.id}", "sampler": "ddim",
                                                "num_inference_steps": 4, "num_images": 4})
    sample = client.wait(sample.id, timeout=120)
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
    job = wait_until_running(client, client.submit("diffusion-train", LONG_TRAIN))
    client.cancel(job.id)
    job = client.wait(job.id, timeout=60)
    assert job.state == "cancelled"
    (run, energy), = energies_of(daemon, job.id)
    assert run.status == "cancelled"
    assert energy.gpu_energy_j > 0 and energy.emissions_g > 0
    assert [e.to_state for e in daemon.store.get(job.id).events] == ["pending", "running", "cancelled"]


def test_a_failing_job_reports_why(daemon, client):
    job = client.submit("diffusion-sample", {"checkpoint": "/nonexistent/checkpoint"})
    job = client.wait(job.id, timeout=120)
    assert job.state == "failed"
    assert "checkpoint" in job.reason.lower()


def test_a_restarted_daemon_reattaches_and_records_jobs_that_ran_meanwhile(daemon):
    """The controller is detached: jobs outlive the daemon, and a new daemon picks up their events."""
    from scheduler.client import Client
    from scheduler.daemon import Daemon

    first = Client(url=daemon.url, token=daemon.token)
    job = wait_until_running(first, first.submit("diffusion-train", LONG_TRAIN))
    daemon.stop()

    second = Daemon(daemon.settings).start()
    try:
        client = Client(url=second.url, token=second.token)
        assert client.get(job.id).state == "running"
        assert any(g["busy_job"] == job.id for g in client.status()["gpus"])
        client.cancel(job.id)
        job = client.wait(job.id, timeout=60)
        assert job.state == "cancelled"
        assert job.energy is not None and job.energy.gpu_energy_j > 0
    finally:
        second.stop()

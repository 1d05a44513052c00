"""A running daemon for the end-to-end modules: on a local Ray with two logical GPUs and a SQLite file of its own.

A module imports what it uses (``from daemon_fixtures import client, daemon``); its ``daemon`` is then this
module-scoped running daemon, not the unstarted one of db_fixtures. A module that needs another cluster, policy
or carbon signal makes its own ``daemon`` fixture with ``running_daemon``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace

import pytest

from scheduler.config import Settings

ray = pytest.importorskip("ray")

#: Seconds a job may take to reach a state the test waits for. Generous: it only bounds a test that fails, and a
#: busy machine slows Ray and job processes down many times (a diffusion job's child imports torch).
JOB_TIMEOUT_S = 240
#: A real training job of a few seconds, most of them the child's start-up (about 10 ms a step here). Only the
#: tests about the diffusion kinds themselves use it; the others run ``synthetic`` jobs, which need no torch.
TINY_TRAIN = {"image_size": 8, "steps": 12, "batch_size": 8, "channels": [8, 16], "checkpoint_every": 6,
              "num_train_timesteps": 50}
#: The synthetic kind's step: a job of it sleeps this long per step, however busy the machine is.
STEP_S = 0.05


def synthetic_job(duration_s: float, checkpoint_every: int = 1000) -> dict:
    """The spec of a ``synthetic`` job of about ``duration_s`` seconds of steps (plus its process's start-up)."""
    return {"steps": max(1, round(duration_s / STEP_S)), "step_s": STEP_S, "checkpoint_every": checkpoint_every}


#: A synthetic job of about a second: it runs, reports progress, checkpoints and ends.
SHORT_JOB = synthetic_job(1.0, checkpoint_every=10)
#: A synthetic job far longer than any test: it is cancelled, suspended or lost while it runs.
ENDLESS_JOB = synthetic_job(5000.0)


@contextmanager
def running_daemon(data_dir, signal=None, **settings):
    """A started daemon on a fresh local Ray (two logical GPUs unless ``settings`` say otherwise) with its
    database in ``data_dir``; on exit it stops, and its controller and Ray go with it."""
    from scheduler.cluster.controller import shutdown_controller
    from scheduler.daemon.daemon import Daemon

    if ray.is_initialized():
        ray.shutdown()
    settings = replace(Settings.from_env(environ={}), data_dir=data_dir, port=0,
                       **{"logical_gpus": 2, "logical_zones": ("DE", "FR"), "sample_interval_s": 0.2, **settings})
    daemon = Daemon(settings, signal=signal).start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutdown_controller()
        ray.shutdown()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with running_daemon(tmp_path_factory.mktemp("wattsched")) as daemon:
        yield daemon


@pytest.fixture
def client(daemon):
    from scheduler.client import Client

    return Client(url=daemon.url, token=daemon.token)


def wait_until_running(client, job, timeout_s: float = JOB_TIMEOUT_S):
    """Poll (with the long-poll endpoint as the pause) until the job runs and has reported progress."""
    from scheduler.client import WaitTimeout

    deadline = time.monotonic() + timeout_s
    while not (job.state == "running" and job.raw.get("progress")):
        assert job.state in ("pending", "running"), job.raw
        assert time.monotonic() < deadline, f"job {job.id} not running with progress within {timeout_s} s"
        try:
            client.wait(job.id, timeout=0.5)
        except WaitTimeout:
            pass
        job = client.get(job.id)
    return job


def poll(condition, timeout_s: float = JOB_TIMEOUT_S, what: str = "condition"):
    """condition()'s first true value, looked at every 50 ms; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)
    return value

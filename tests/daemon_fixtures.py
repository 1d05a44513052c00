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

#: Seconds a job may take to reach a state the test waits for (the child imports torch on a busy machine).
JOB_TIMEOUT_S = 120
#: A training job of a few seconds, most of them the child's start-up (about 10 ms a step here).
TINY_TRAIN = {"image_size": 8, "steps": 12, "batch_size": 8, "channels": [8, 16], "checkpoint_every": 6,
              "num_train_timesteps": 50}


@contextmanager
def running_daemon(data_dir, signal=None, **settings):
    """A started daemon on a fresh local Ray (two logical GPUs unless ``settings`` say otherwise) with its
    database in ``data_dir``; on exit it stops, and its controller and Ray go with it."""
    from scheduler.cluster.controller import shutdown_controller
    from scheduler.daemon.daemon import Daemon

    if ray.is_initialized():
        ray.shutdown()
    settings = replace(Settings.from_env(environ={}), data_dir=data_dir, port=0,
                       **{"logical_gpus": 2, "sample_interval_s": 0.2, **settings})
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

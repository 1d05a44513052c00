"""A running daemon for the end-to-end modules: on a local Ray with two logical GPUs and a SQLite file of its own.

A module imports what it uses (``from daemon_fixtures import client, daemon``); its ``daemon`` is then this
module-scoped running daemon, not the unstarted one of db_fixtures.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from scheduler.config import Settings

ray = pytest.importorskip("ray")

#: Seconds a job may take to reach a state the test waits for (the child imports torch on a busy machine).
JOB_TIMEOUT_S = 120


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

"""`kill -9` of the leading daemon: two `wattsched daemon` processes on one SQLite database and one Ray cluster; the
second stands by, the first is killed with SIGKILL mid-job, the second takes over, and the job's run goes on
(not lost, not requeued) and ends once, its energy what its samples measured.

Unlike test_leader_takeover (one process, the leader stopped cleanly, its lease released), the leader here dies
without a word: its lease must expire, and its Ray driver dies with it, so only the detached controller keeps
the job. The Ray cluster is one the test starts (ray.cluster_utils) and shuts down; the daemons are processes it
starts and ends by their ids.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_fixtures import JOB_TIMEOUT_S, poll, synthetic_job, wait_until_running

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.fault]

BIN = Path(sys.executable).parent
# Generous: it only bounds a test that fails; each daemon connects to Ray on a busy machine.
START_TIMEOUT_S = 180
#: Short, so the standby does not wait long for the dead leader's lease; renewals often enough for a loaded machine.
LEASE = {"WATTSCHED_LEADER_LEASE_S": "4", "WATTSCHED_LEADER_RENEW_S": "0.5"}
#: Both daemons' clients use this admin token (the first daemon bootstraps it into the shared database; the second
#: finds it there). Each daemon's own local token would do as well: local tokens are named per data directory and
#: host (scheduler.store.auth.local_token_name), so the second daemon's start no longer revokes the first's. One
#: operator-chosen token keeps the clients independent of which daemon wrote which daemon.json, as on a cluster.
SECRET = "leader-kill-test-admin-secret-0123"


class DaemonProcess:
    """A `wattsched daemon` process with a data directory of its own and the shared database and Ray."""

    def __init__(self, folder: Path, database_url: str, ray_address: str):
        self.folder = folder
        folder.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATTSCHED_")}
        env.update(LEASE, WATTSCHED_DATA_DIR=str(folder), WATTSCHED_DATABASE_URL=database_url,
                   WATTSCHED_RAY_ADDRESS=ray_address, WATTSCHED_PORT="0", WATTSCHED_SAMPLE_INTERVAL_S="0.2",
                   WATTSCHED_ADMIN_TOKEN=SECRET)
        with open(folder / "out.log", "w") as out:
            self.process = subprocess.Popen([str(BIN / "wattsched"), "daemon"], env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def client(self):
        """A client of this daemon once it listens (it writes daemon.json then)."""
        from scheduler.client import Client

        address = self.folder / "daemon.json"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not address.exists() and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # polls a file the daemon writes once it listens
        assert address.exists(), f"the daemon did not start (exit {self.process.poll()}):\n{self.log()}"
        return Client(url=json.loads(address.read_text())["url"], token=SECRET, timeout_s=60)

    def log(self) -> str:
        return (self.folder / "out.log").read_text()[-3000:]

    def end(self) -> None:
        """Stop it if it still runs: Ctrl-C, then SIGKILL to its process group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def cluster():
    """A one-node Ray cluster with two logical GPUs, started for this test only (the test process does not
    connect to it: the daemons are its drivers)."""
    from ray.cluster_utils import Cluster

    from scheduler.cluster.controller import shutdown_controller

    if ray.is_initialized():  # another module's Ray in this process
        shutdown_controller()
        ray.shutdown()
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 4, "num_gpus": 2})
    try:
        yield cluster
    finally:
        cluster.shutdown()


def recorded_run(database_url: str, run_id: int):
    """The run as the database holds it (its status, energy and stored samples), and its job's states in turn."""
    from datetime import datetime, timezone

    from scheduler.store.engine import make_engine, make_session_factory
    from scheduler.store.jobs import JobStore

    engine = make_engine(database_url)
    try:
        store = JobStore(make_session_factory(engine), lambda: datetime.now(timezone.utc), Path("unused"))
        job = store.get(store_job_of(store, run_id))
        [run] = [r for r in job.runs if r.id == run_id]
        return run, store.stored_samples(run_id), [e.to_state for e in job.events]
    finally:
        engine.dispose()


def store_job_of(store, run_id: int) -> str:
    from scheduler.store.models import Run

    with store.sessions() as session:
        return session.get(Run, run_id).job_id


def test_kill_9_of_the_leader_the_standby_takes_over_and_the_running_job_ends_once(tmp_path, cluster):
    database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = DaemonProcess(tmp_path / "first", database_url, cluster.address)
    second = None
    try:
        leader = first.client()
        assert poll(lambda: leader.status()["role"] == "leader", timeout_s=60, what="the first daemon leads")
        second = DaemonProcess(tmp_path / "second", database_url, cluster.address)
        standby = second.client()
        assert standby.status()["role"] == "standby"

        # Long enough to outlast the takeover (the lease's 4 s and a reattach) on a loaded machine.
        job = wait_until_running(leader, leader.submit("synthetic", synthetic_job(40.0)))
        [run] = job.runs

        first.process.send_signal(signal.SIGKILL)  # the leader dies without releasing its lease
        assert first.process.wait(timeout=30) == -signal.SIGKILL

        poll(lambda: standby.status()["role"] == "leader", timeout_s=60, what="the standby takes over")
        taken_over = standby.get(job.id)
        # still running under the controller: not lost, not requeued
        runs = [(r.id, r.exit_status) for r in taken_over.runs]
        assert (taken_over.state, runs) == ("running", [(run.id, "running")]), taken_over.raw

        done = standby.wait(job.id, timeout=JOB_TIMEOUT_S)
        assert done.state == "succeeded", done.raw
        assert [(r.id, r.exit_status) for r in done.runs] == [(run.id, "succeeded")]  # recorded once

        stored, samples, states = recorded_run(database_url, run.id)
        assert states == ["pending", "running", "succeeded"]  # never queued again
        assert stored.status == "succeeded" and samples
        assert stored.energy.gpu_energy_j > 0
        # the run's energy is what its samples measured, each sample stored once
        assert (stored.energy.gpu_energy_j, stored.energy.cpu_energy_j) == pytest.approx(
            (samples[-1].gpu_energy_j, samples[-1].cpu_energy_j))
        times = [s.at for s in samples]
        assert times == sorted(set(times))
    finally:
        first.end()
        if second is not None:
            second.end()

"""examples/train_diffusers.py, the example of a training script that honours the command-job protocol: alone (it
checkpoints and resumes) and as a two-rank command job on a real daemon, stopped by a suspension at a
checkpoint and resumed from it with WATTSCHED_RESUMING=1. Both import torch and diffusers: slow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_fixtures import JOB_TIMEOUT_S, poll, running_daemon, wait_until_running

pytest.importorskip("diffusers")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_diffusers.py"


def run_example(job_dir: Path, *args: str, resuming: bool = False) -> str:
    env = {"PATH": "/usr/bin:/bin", "WATTSCHED_JOB_DIR": str(job_dir), "WATTSCHED_PROGRESS": str(job_dir / "p.jsonl"),
           "WATTSCHED_RESUMING": "1" if resuming else "0"}
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True, text=True,
                          timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_alone_it_checkpoints_reports_progress_and_resumes(tmp_path):
    out = run_example(tmp_path, "--steps", "4", "--checkpoint-every", "2", "--batch-size", "8")
    assert "finished 4 steps (this run: 4)" in out
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 1 and lines[-1]["step"] == 4 and {line["total"] for line in lines} == {4}
    out = run_example(tmp_path, "--steps", "6", "--batch-size", "8", resuming=True)
    assert "resuming from" in out and "at step 4" in out and "finished 6 steps (this run: 2)" in out


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with running_daemon(tmp_path_factory.mktemp("wattsched"), logical_zones=("DE",)) as daemon:
        yield daemon


@pytest.fixture
def client(daemon):
    from scheduler.client import Client

    return Client(url=daemon.url, token=daemon.token)


@pytest.mark.ray
def test_as_a_two_rank_command_job_it_stops_at_a_checkpoint_and_resumes_from_it(daemon, client):
    # Far more steps than the test waits for: it is suspended, resumed, and cancelled once it has gone on.
    argv = [sys.executable, str(EXAMPLE), "--steps", "1000000", "--batch-size", "8", "--checkpoint-every", "1000"]
    job = wait_until_running(client, client.submit("command", {"argv": argv}, gpus=2, interruptible=True))
    daemon._suspend(job.id, daemon.store.get(job.id).runs[-1].id)  # what the scheduler does to make room
    stderr = Path(job.raw["workdir"]) / "stderr.log"
    resumed = poll(lambda: re.search(r"rank 0: resuming from .* at step (\d+)", stderr.read_text()),
                   what="the second run resuming")
    stopped = re.search(r"stopped at step (\d+) of 1000000", stderr.read_text())
    assert stopped and int(resumed.group(1)) == int(stopped.group(1)) > 0  # from where the first run stopped
    assert "rank 1: resuming from" in stderr.read_text()
    poll(lambda: (client.get(job.id).raw.get("progress") or {}).get("step", 0) > int(stopped.group(1)),
         what="progress beyond the checkpoint")
    client.cancel(job.id)
    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    assert job.state == "cancelled", job.raw
    runs = daemon.store.get(job.id).runs
    assert [r.status for r in runs] == ["suspended", "cancelled"]
    assert all(r.energy.gpu_energy_j > 0 for r in runs)

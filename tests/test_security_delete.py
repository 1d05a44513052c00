"""Deleting a job, on real SQLite and PostgreSQL: DELETE /v1/jobs/{id} and ``wattsched delete`` remove a job that
has ended with its events, runs, energy, samples and directory; never while it runs or while another job that has
not ended needs it; a user deletes only their own jobs (another's answers as an unknown id)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from scheduler.api.app import create_app
from scheduler.cli.commands import main
from scheduler.store.job_state import RunStatus
from scheduler.store.models import Job, JobEvent, PowerSample, Run, RunEnergy
from test_client import LoopbackServer

TRAIN = {"kind": "diffusion-train", "spec": {"steps": 5}}


@pytest.fixture
def app(daemon):
    return create_app(daemon)


def as_user(app, daemon, name, role="user") -> TestClient:
    token = daemon.auth.create_token(name, role).secret
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def counts(daemon) -> dict[str, int]:
    with daemon.store.sessions() as session:
        return {table.__name__: session.scalar(select(func.count()).select_from(table))
                for table in (Job, JobEvent, Run, RunEnergy, PowerSample)}


def finished_job(daemon, client: TestClient, status: RunStatus = RunStatus.SUCCEEDED) -> str:
    """A job of ``client``'s user that ran once, with energy, power samples and outputs in its directory."""
    job = client.post("/v1/jobs", json=TRAIN).json()
    run = daemon.store.start_run(job["id"], "node1", "DE", ["w1"], None, "running in zone DE")
    daemon.store.add_samples(run.id, [[1.0e9, 100.0, 10.0, 100.0, 10.0], [1.0e9 + 1, 110.0, 11.0, 210.0, 21.0]])
    energy = RunEnergy(gpu_energy_j=210.0, cpu_energy_j=21.0, gpu_method="simulated", cpu_method="estimate",
                       duration_s=1.0, avg_power_w=231.0, peak_power_w=121.0)
    daemon.store.finish_run(run.id, status, 0, None, energy, {"steps_done": 5})
    workdir = Path(job["workdir"])
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "checkpoints" / "model.bin").write_bytes(b"weights")
    return job["id"]


def test_an_admin_deletes_a_finished_job_with_everything_it_left(app, daemon):
    admin, alice = as_user(app, daemon, "root", "admin"), as_user(app, daemon, "alice")
    gone, kept = finished_job(daemon, alice), finished_job(daemon, alice)
    before = counts(daemon)

    answer = admin.delete(f"/v1/jobs/{gone}")
    assert answer.status_code == 200 and answer.json() == {"id": gone, "deleted": True, "outputs_removed": True}
    after = counts(daemon)
    assert after == {"Job": before["Job"] - 1, "JobEvent": before["JobEvent"] // 2, "Run": 1, "RunEnergy": 1,
                     "PowerSample": before["PowerSample"] // 2}
    assert not (daemon.settings.jobs_dir / gone).exists() and (daemon.settings.jobs_dir / kept).is_dir()
    assert admin.get(f"/v1/jobs/{gone}").status_code == 404
    assert [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]] == [kept]
    assert admin.delete(f"/v1/jobs/{gone}").status_code == 404  # once


def test_a_job_is_deleted_only_once_it_has_ended_and_nothing_needs_it(app, daemon):
    admin = as_user(app, daemon, "root", "admin")
    waiting = admin.post("/v1/jobs", json=TRAIN).json()["id"]
    running = admin.post("/v1/jobs", json=TRAIN).json()["id"]
    daemon.store.start_run(running, "node1", "DE", ["w1"], None, "running in zone DE")
    for job_id, state in ((waiting, "pending"), (running, "running")):
        answer = admin.delete(f"/v1/jobs/{job_id}")
        assert answer.status_code == 409 and state in answer.json()["error"]["message"]
    done = finished_job(daemon, admin)
    reader = admin.post("/v1/jobs", json={"kind": "diffusion-sample", "spec": {"checkpoint": f"job:{done}"}})
    assert reader.status_code == 201
    needed = admin.delete(f"/v1/jobs/{done}")
    assert needed.status_code == 409 and "needed by a job that has not ended" in needed.json()["error"]["message"]
    assert reader.json()["id"] not in needed.json()["error"]["message"]
    admin.post(f"/v1/jobs/{reader.json()['id']}/cancel")
    follower = admin.post("/v1/jobs", json={**TRAIN, "depends_on": [done]}).json()["id"]
    assert admin.delete(f"/v1/jobs/{done}").status_code == 409
    admin.post(f"/v1/jobs/{follower}/cancel")
    assert admin.delete(f"/v1/jobs/{done}").status_code == 200
    assert counts(daemon)["Job"] == 4


def test_users_delete_their_own_ended_jobs_and_no_one_elses(app, daemon):
    alice, bob = as_user(app, daemon, "alice"), as_user(app, daemon, "bob")
    mine, theirs = finished_job(daemon, alice, RunStatus.FAILED), finished_job(daemon, bob)
    foreign, unknown = alice.delete(f"/v1/jobs/{theirs}"), alice.delete("/v1/jobs/000000000000")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["message"].replace(theirs, "000000000000") == unknown.json()["error"]["message"]
    assert bob.get(f"/v1/jobs/{theirs}").status_code == 200
    assert alice.delete(f"/v1/jobs/{mine}").json()["deleted"] is True
    assert counts(daemon)["Job"] == 1


def test_a_directory_outside_the_jobs_directory_is_left_in_place(app, daemon, tmp_path):
    admin = as_user(app, daemon, "root", "admin")
    elsewhere = tmp_path / "not-a-job-dir"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep")
    for workdir in (str(elsewhere), None):
        job_id = admin.post("/v1/jobs", json=TRAIN).json()["id"]
        admin.post(f"/v1/jobs/{job_id}/cancel")
        if workdir is None:  # its own directory path, but a link to another folder
            link = daemon.settings.jobs_dir / job_id
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(elsewhere)
        else:
            with daemon.store.sessions.begin() as session:
                session.get(Job, job_id).workdir = workdir
        answer = admin.delete(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200 and answer.json()["outputs_removed"] is False
        assert (elsewhere / "precious").read_text() == "keep"


def test_wattsched_delete(app, daemon, capsys):
    token = daemon.auth.create_token("root", "admin").secret
    with LoopbackServer(app) as server:
        conn = ["--url", server.url, "--token", token]
        main([*conn, "submit", "diffusion-train", "--format", "json"])
        job = json.loads(capsys.readouterr().out)
        assert main([*conn, "delete", job["id"]]) == 1  # pending: refused, one line
        assert "cancel it" in capsys.readouterr().err
        main([*conn, "cancel", job["id"]])
        capsys.readouterr()
        assert main([*conn, "delete", job["id"], "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"id": job["id"], "deleted": True, "outputs_removed": True}
        assert main([*conn, "status", job["id"]]) == 1

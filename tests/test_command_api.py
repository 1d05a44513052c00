"""Submitting command jobs through the REST API (real SQLite and PostgreSQL, FastAPI's test client, no Ray): who
may (WATTSCHED_COMMAND_JOBS), the spec checked naming the field, and the spec as stored."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from scheduler.api.app import create_app

JOB = {"kind": "command", "spec": {"argv": ["python", "train.py", "--lr", "1e-4"], "env": {"SEED": "1"}}, "gpus": 1}


def as_role(daemon, role: str) -> TestClient:
    token = daemon.auth.create_token(f"someone-{role}", role).secret
    return TestClient(create_app(daemon), headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("setting,host,role,allowed", [
    ("loopback", "127.0.0.1", "admin", True),
    ("loopback", "127.0.0.1", "user", False),
    ("loopback", "0.0.0.0", "admin", False),
    ("admins", "0.0.0.0", "admin", True),
    ("admins", "0.0.0.0", "user", False),
    ("all", "0.0.0.0", "user", True),
    ("off", "127.0.0.1", "admin", False),
])
def test_command_jobs_are_allowed_as_the_setting_says_else_403_naming_it(daemon, setting, host, role, allowed):
    daemon.settings = replace(daemon.settings, command_jobs=setting, host=host)
    api = as_role(daemon, role)
    response = api.post("/v1/jobs", json=JOB)
    if allowed:
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["kind"] == "command"
        assert job["spec"] == {"argv": ["python", "train.py", "--lr", "1e-4"], "cwd": None, "env": {"SEED": "1"}}
    else:
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["code"] == "forbidden" and error["field"] == "kind"
        assert "WATTSCHED_COMMAND_JOBS" in error["message"] and f"(now {setting})" in error["message"]
        assert api.get("/v1/jobs").json()["total"] == 0
    # other kinds are never refused for it
    assert api.post("/v1/jobs", json={"kind": "synthetic", "spec": {}}).status_code == 201


@pytest.mark.parametrize("spec,field", [
    ({}, "spec.argv"),
    ({"argv": "python train.py"}, "spec.argv"),
    ({"argv": ["python"], "env": {"WATTSCHED_RUN": "7"}}, "spec.env.WATTSCHED_RUN"),
])
def test_a_bad_command_spec_gets_a_400_naming_the_field(daemon, spec, field):
    response = as_role(daemon, "admin").post("/v1/jobs", json={"kind": "command", "spec": spec})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_a_command_job_may_be_interruptible_with_its_own_stop_protocol(daemon):
    response = as_role(daemon, "admin").post("/v1/jobs", json={
        **JOB, "gpus": 2, "interruptible": True, "stop_signal": "SIGUSR1", "grace_s": 30, "launch": "per-gpu"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["interruptible"] is True
    assert (job["stop_signal"], job["grace_s"], job["launch"], job["gpus"]) == ("SIGUSR1", 30.0, "per-gpu", 2)

"""Bad strings through the API on real SQLite and PostgreSQL: text the store cannot hold (a lone surrogate, NUL,
in any nested value or key) is a 400 naming the field with nothing stored; a job already holding such text, or a
number JSON has not, never breaks a list or a get; a log offset anywhere in its documented range answers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from scheduler.api.app import create_app
from scheduler.store.models import Job, JobEvent

LONE = "\ud800"


@pytest.fixture
def admin(daemon):
    token = daemon.auth.create_token("root", "admin").secret
    return TestClient(create_app(daemon), headers={"Authorization": f"Bearer {token}"})


def rows(daemon) -> tuple[int, int]:
    with daemon.store.sessions() as session:
        return (session.scalar(select(func.count()).select_from(Job)),
                session.scalar(select(func.count()).select_from(JobEvent)))


def post_raw(client: TestClient, body: str):
    """A body as sent: json= would refuse to encode a lone surrogate, a client's JSON need not."""
    return client.post("/v1/jobs", content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("body, field", [
    ('{"kind": "diffusion-train", "spec": {"dataset": "\\ud800"}}', "spec.dataset"),
    ('{"kind": "diffusion-train", "spec": {"\\udfff": 1}}', "spec"),
    ('{"kind": "diffusion-train", "spec": {"dataset": "a\\u0000b"}}', "spec.dataset"),
    ('{"kind": "command", "spec": {"argv": ["python", "x\\u0000"]}}', "spec.argv[1]"),
    ('{"kind": "command", "spec": {"argv": ["true"], "env": {"A": "\\ud83d"}}}', "spec.env.A"),
    ('{"kind": "command", "spec": {"argv": ["true"], "env": {"A\\u0000": "x"}}}', "spec.env"),
    ('{"kind": "diffusion-train", "spec": {"x": {"y": [{"z": "\\ud800"}]}}}', "spec.x.y[0].z"),
    ('{"kind": "diffusion-train", "spec": {}, "\\ud800": 1}', None),
])
def test_text_the_store_cannot_hold_is_refused_and_nothing_is_stored(daemon, admin, body, field):
    response = post_raw(admin, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if field is not None:
        assert error["field"] == field
    assert rows(daemon) == (0, 0)
    assert admin.get("/v1/jobs").status_code == 200
    good = post_raw(admin, '{"kind": "diffusion-train", "spec": {"dataset": "digits"}}')
    assert good.status_code == 201  # valid text (and a pair of surrogates is one valid character) is fine
    assert post_raw(admin, '{"kind": "command", "spec": {"argv": ["echo", "\\ud83d\\ude00"]}}').status_code == 201


def test_a_job_holding_text_that_cannot_be_served_leaves_lists_and_gets_intact(daemon, admin, caplog):
    bad = admin.post("/v1/jobs", json={"kind": "diffusion-train", "spec": {"steps": 5}}).json()["id"]
    fine = admin.post("/v1/jobs", json={"kind": "diffusion-train", "spec": {"steps": 6}}).json()["id"]
    # As a job stored before text was checked, or one whose own progress line held these, would hold them.
    try:
        with daemon.store.sessions.begin() as session:
            session.execute(update(Job).where(Job.id == bad).values(
                spec={"dataset": LONE}, progress={"note": LONE, "loss": float("nan")}))
    except Exception as exc:  # PostgreSQL refuses to hold them at all: no such row can exist there
        assert daemon.engine.dialect.name == "postgresql", exc
        return
    with caplog.at_level(logging.WARNING, logger="scheduler.api.responses"):
        listed = admin.get("/v1/jobs")
    assert listed.status_code == 200
    jobs = {j["id"]: j for j in listed.json()["jobs"]}
    assert set(jobs) == {bad, fine}
    assert jobs[bad]["progress"] == {"note": "\\ud800", "loss": None} and jobs[bad]["spec"]["dataset"] == "\\ud800"
    assert bad in caplog.text
    assert admin.get(f"/v1/jobs/{bad}").json()["progress"]["note"] == "\\ud800"
    assert admin.post(f"/v1/jobs/{bad}/cancel").json()["state"] == "cancelled"


def test_a_log_offset_anywhere_in_its_range_answers(daemon, admin):
    job = admin.post("/v1/jobs", json={"kind": "diffusion-train", "spec": {"steps": 5}}).json()
    Path(job["workdir"]).mkdir(parents=True)
    (Path(job["workdir"]) / "stderr.log").write_text("step 1\n")
    for offset in (0, 3, 7, 8, 2**40, 2**50):
        answer = admin.get(f"/v1/jobs/{job['id']}/logs", params={"offset": offset})
        assert answer.status_code == 200, (offset, answer.text)
        assert answer.json()["text"] == "step 1\n"[offset:]
        assert answer.json()["next_offset"] == max(offset, 0) + len("step 1\n"[offset:])
    assert admin.get(f"/v1/jobs/{job['id']}/logs", params={"offset": 2**50 + 1}).json()["error"]["field"] == \
        "offset"

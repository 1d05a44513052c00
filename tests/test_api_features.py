"""The v1 API's submission options, idempotency, hold/release, filters, size limits and logs, on real SQLite
and PostgreSQL through FastAPI's test client (no Ray)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from scheduler.api.app import MAX_BODY_BYTES, create_app
from scheduler.store.job_state import RunStatus

JOB = {"kind": "diffusion-train", "spec": {"steps": 5}}


@pytest.fixture
def api(daemon):
    token = daemon.auth.create_token("alice", "user").secret
    return TestClient(create_app(daemon), headers={"Authorization": f"Bearer {token}"})


def in_hours(hours: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(hours=hours)).isoformat()


# --- submission options -----------------------------------------------------------------------------------


def test_submission_options_are_stored_and_served(api, daemon):
    first = api.post("/v1/jobs", json=JOB).json()
    body = {**JOB, "not_before": in_hours(1), "deadline": in_hours(5), "time_limit_s": 3600, "priority": 7,
            "hold": True, "depends_on": [first["id"]]}
    job = api.post("/v1/jobs", json=body).json()
    assert job["hold"] is True and job["reason"] == "held by the user"
    assert job["priority"] == 7 and job["time_limit_s"] == 3600.0 and job["depends_on"] == [first["id"]]
    assert datetime.fromisoformat(job["not_before"]) == datetime.fromisoformat(body["not_before"])
    # Held jobs are not offered to the policy; the others carry what the policy must honour.
    waiting = daemon.store.waiting()
    assert [j.id for j in waiting] == [first["id"]]
    assert daemon.store.unmet_dependencies([daemon.store.get(job["id"])]) == {job["id"]: [(first["id"], "pending")]}


def test_hold_and_release(api, daemon):
    job = api.post("/v1/jobs", json=JOB).json()
    held = api.post(f"/v1/jobs/{job['id']}/hold").json()
    assert held["hold"] and held["state"] == "pending" and held["reason"] == "held by the user"
    assert daemon.store.waiting() == []
    assert api.post(f"/v1/jobs/{job['id']}/hold").status_code == 200  # holding twice is harmless
    released = api.post(f"/v1/jobs/{job['id']}/release").json()
    assert not released["hold"] and released["reason"] == "released by the user; queued"
    assert [j.id for j in daemon.store.waiting()] == [job["id"]]
    again = api.post(f"/v1/jobs/{job['id']}/release")
    assert again.status_code == 409 and "not held" in again.json()["error"]["message"]
    api.post(f"/v1/jobs/{job['id']}/cancel")
    assert api.post(f"/v1/jobs/{job['id']}/hold").status_code == 409


# --- idempotency ------------------------------------------------------------------------------------------


def test_submitting_twice_with_a_key_creates_one_job(api, daemon):
    first = api.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "run-42"})
    second = api.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "run-42"})
    in_body = api.post("/v1/jobs", json={**JOB, "idempotency_key": "run-42"})
    assert (first.status_code, second.status_code, in_body.status_code) == (201, 200, 200)
    assert first.json()["id"] == second.json()["id"] == in_body.json()["id"]
    assert daemon.store.list()[1] == 1
    assert api.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "run-43"}).status_code == 201


def test_the_same_key_with_another_request_conflicts(api):
    api.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "k"})
    other = api.post("/v1/jobs", json={**JOB, "spec": {"steps": 6}}, headers={"Idempotency-Key": "k"})
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "idempotency_key" and "different request" in other.json()["error"][
        "message"]
    mismatch = api.post("/v1/jobs", json={**JOB, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"})
    assert mismatch.status_code == 400 and mismatch.json()["error"]["field"] == "idempotency_key"


def test_keys_are_per_user(api, daemon):
    bob = TestClient(api.app, headers={"Authorization": f"Bearer {daemon.auth.create_token('bob').secret}"})
    a = api.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "same"}).json()
    b = bob.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "same"}).json()
    assert a["id"] != b["id"]


def test_concurrent_submissions_with_one_key_create_one_job(api, daemon):
    answers = []

    def submit():
        answers.append(api.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status_code for r in answers} <= {200, 201}
    assert len({r.json()["id"] for r in answers}) == 1 and daemon.store.list()[1] == 1


# --- bad requests: a 4xx naming the field, never a 5xx -----------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({**JOB, "time_limit_s": -1}, "time_limit_s"),
    ({**JOB, "time_limit_s": 1e300}, "time_limit_s"),
    ({**JOB, "time_limit_s": "1h"}, "time_limit_s"),
    ({**JOB, "priority": 10**12}, "priority"),
    ({**JOB, "priority": 1.5}, "priority"),
    ({**JOB, "hold": "yes"}, "hold"),
    ({**JOB, "depends_on": "abc"}, "depends_on"),
    ({**JOB, "depends_on": ["nope"]}, "depends_on"),
    ({**JOB, "depends_on": ["\x00"]}, "depends_on"),
    ({**JOB, "not_before": "soon"}, "not_before"),
    ({**JOB, "not_before": in_hours(10), "deadline": in_hours(5)}, "not_before"),
    ({**JOB, "deadline": "9999-12-31T23:59:59+00:00"}, "deadline"),
    ({**JOB, "not_before": "0001-01-01T00:00:00+01:00"}, "not_before"),
    ({**JOB, "idempotency_key": "ü" * 3}, "idempotency_key"),
    ({**JOB, "idempotency_key": "k" * 1000}, "idempotency_key"),
    ({**JOB, "zones": ["DE\x00"]}, "zones"),
    ({**JOB, "zones": ["DE"] * 1000}, "zones"),
    ({"kind": ["diffusion-train"], "spec": {}}, "kind"),
    ({"kind": "🙂" * 5000, "spec": {}}, "kind"),
    ({"kind": "diffusion-train", "spec": {"steps": 1e308}}, "spec.steps"),
    ({"kind": "diffusion-train", "spec": {"steps": True}}, "spec.steps"),
    ({"kind": "diffusion-train", "spec": {"ü": 1}}, "spec.ü"),
])
def test_bad_fields_are_400_naming_the_field(api, body, field):
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field and len(response.json()["error"]["message"]) <= 1000


def test_a_large_body_is_413(api):
    big = {**JOB, "spec": {"dataset": "x" * (MAX_BODY_BYTES + 10)}}
    response = api.post("/v1/jobs", json=big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert str(MAX_BODY_BYTES) in response.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(MAX_BODY_BYTES // 1000 + 2):
            yield b" " * 1000

    chunked = api.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413


@pytest.mark.parametrize("raw", [b"{\"kind\": ", b"\xff\xfe", b"null", b"[" * 100000 + b"]" * 100000])
def test_malformed_json_names_the_body(api, raw):
    response = api.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 413)
    assert response.json()["error"]["field"] == "body"


@pytest.mark.parametrize("path, params, field", [
    ("/v1/jobs", {"kind": "x\x00"}, "kind"),
    ("/v1/jobs", {"zone": "z" * 500}, "zone"),
    ("/v1/jobs", {"since": "9999-99-99"}, "since"),
    ("/v1/jobs", {"offset": "-1"}, "offset"),
    ("/v1/history", {"group_by": "colour"}, "group_by"),
    ("/v1/history", {"state": "ü"}, "state"),
])
def test_bad_query_parameters_name_the_field(api, path, params, field):
    response = api.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field


def test_unknown_routes_and_methods_keep_the_error_shape(api):
    assert api.get("/v2/jobs").json()["error"]["code"] == "not_found"
    assert api.put("/v1/jobs").status_code == 405
    assert api.get("/v1/jobs/" + "x" * 500).status_code == 404


# --- lists: pagination and filters ------------------------------------------------------------------------


def test_list_pagination_and_filters(api, daemon):
    ids = [api.post("/v1/jobs", json=JOB).json()["id"] for _ in range(5)]
    page = api.get("/v1/jobs", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [j["id"] for j in page["jobs"]] == ids[::-1][1:3]
    run = daemon.store.start_run(ids[0], "node", "FR", ["gpu-0"], None, "running in FR")
    daemon.store.finish_run(run.id, RunStatus.SUCCEEDED, 0, None, None, {})
    assert [j["id"] for j in api.get("/v1/jobs", params={"zone": "FR"}).json()["jobs"]] == [ids[0]]
    assert api.get("/v1/jobs", params={"state": "succeeded"}).json()["total"] == 1
    assert api.get("/v1/jobs", params={"since": in_hours(1)}).json()["total"] == 0
    assert api.get("/v1/jobs", params={"until": in_hours(1), "user": "alice"}).json()["total"] == 5


# --- logs -------------------------------------------------------------------------------------------------


def test_logs_in_chunks_with_offsets(api, daemon):
    job = api.post("/v1/jobs", json=JOB).json()
    workdir = Path(job["workdir"])
    workdir.mkdir(parents=True)
    text = "step 1\nloss ünïcode 🙂\n"
    (workdir / "stderr.log").write_text(text)
    (workdir / "events.jsonl").write_text(json.dumps({"event": "progress", "step": 1}) + "\n")

    whole = api.get(f"/v1/jobs/{job['id']}/logs").json()
    assert whole["text"] == text and whole["next_offset"] == len(text.encode()) and not whole["complete"]
    # A chunk never splits a UTF-8 character: the rest comes with the next offset.
    cut = text.encode().index("🙂".encode()) + 2
    first = api.get(f"/v1/jobs/{job['id']}/logs", params={"max_bytes": cut}).json()
    rest = api.get(f"/v1/jobs/{job['id']}/logs", params={"offset": first["next_offset"]}).json()
    assert first["text"] + rest["text"] == text
    events = api.get(f"/v1/jobs/{job['id']}/logs", params={"stream": "events"}).json()
    assert json.loads(events["text"])["step"] == 1
    assert api.get(f"/v1/jobs/{job['id']}/logs", params={"stream": "secrets"}).json()["error"]["field"] == "stream"
    api.post(f"/v1/jobs/{job['id']}/cancel")
    end = api.get(f"/v1/jobs/{job['id']}/logs", params={"offset": whole["next_offset"], "wait_s": 5}).json()
    assert end["text"] == "" and end["complete"]  # over: no waiting


def test_logs_of_a_job_that_has_not_written_any(api):
    job = api.post("/v1/jobs", json=JOB).json()
    answer = api.get(f"/v1/jobs/{job['id']}/logs", params={"wait_s": 0.3}).json()
    assert answer["text"] == "" and answer["next_offset"] == 0 and not answer["complete"]

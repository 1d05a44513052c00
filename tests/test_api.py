"""REST API validation on real SQLite and PostgreSQL, through FastAPI's test client (no Ray needed)."""

import pytest
from fastapi.testclient import TestClient

from scheduler.api.app import create_app


@pytest.fixture
def api(daemon):
    """The API as an admin."""
    token = daemon.auth.create_token("admin", "admin").secret
    return TestClient(create_app(daemon), headers={"Authorization": f"Bearer {token}"})


def test_submit_get_list_cancel(api):
    created = api.post("/v1/jobs", json={"kind": "diffusion-train", "spec": {"steps": 5}, "zones": ["DE"]})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["state"] == "pending" and job["spec"]["steps"] == 5 and job["energy"] is None
    assert api.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]
    listing = api.get("/v1/jobs", params={"state": "pending"}).json()
    assert listing["total"] == 1 and listing["jobs"][0]["id"] == job["id"]
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    again = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    waited = api.get(f"/v1/jobs/{job['id']}/wait", params={"timeout_s": 0}).json()
    assert waited["state"] == "cancelled"


@pytest.mark.parametrize("body,field", [
    ({"kind": "rm -rf", "spec": {}}, "kind"),
    ({"kind": "diffusion-train", "spec": {"steps": -1}}, "spec.steps"),
    ({"kind": "diffusion-train", "spec": [1, 2]}, "spec"),
    ({"kind": "diffusion-train", "spec": {}, "gpus": "two"}, "gpus"),
    ({"kind": "diffusion-train", "spec": {}, "gpus": 10**9}, "gpus"),
    ({"kind": "diffusion-train", "spec": {}, "deadline": "yesterday"}, "deadline"),
    ({"kind": "diffusion-train", "spec": {}, "deadline": "2001-01-01T00:00:00Z"}, "deadline"),
    ({"kind": "diffusion-train", "spec": {}, "deadline": "2099-01-01T00:00:00"}, "deadline"),
    ({"kind": "diffusion-train", "spec": {}, "zones": ["x" * 1000]}, "zones"),
    ({"kind": "diffusion-train", "spec": {}, "colour": "red"}, "colour"),
    ({"kind": "diffusion-sample", "spec": {"checkpoint": "job:ü🙂"}}, "spec.checkpoint"),
])
def test_bad_submissions_get_a_400_naming_the_field(api, body, field):
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["message"]
    assert api.get("/v1/jobs").json()["total"] == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\"text\"", b""])
def test_malformed_bodies_are_4xx(api, raw):
    response = api.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500


def test_unknown_job_and_bad_query_parameters(api):
    assert api.get("/v1/jobs/nope").status_code == 404
    assert api.get("/v1/jobs", params={"limit": "lots"}).json()["error"]["field"] == "limit"
    assert api.get("/v1/jobs", params={"state": "dreaming"}).json()["error"]["field"] == "state"
    assert api.get("/v1/history", params={"since": "last week"}).json()["error"]["field"] == "since"
    assert api.get("/v1/jobs/x/wait", params={"timeout_s": 1e9}).status_code == 400


def test_requests_without_the_token_are_refused(api):
    anonymous = TestClient(api.app)
    assert anonymous.get("/v1/jobs").status_code == 401
    assert anonymous.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_history_of_an_empty_database(api):
    history = api.get("/v1/history").json()
    assert history == {"jobs": [], "totals": {
        "jobs": 0, "by_method": [], "mixed_methods": False, "gpu_energy_j": 0, "cpu_energy_j": 0, "energy_j": 0,
        "energy_kwh": 0, "emissions_g": 0, "counterfactual_emissions_g": None, "saving_g": None, "saving_jobs": 0,
        "saving_basis": None, "energy_unknown_jobs": 0, "emissions_unknown_jobs": 0}}


def test_an_unexpected_error_is_answered_in_the_api_error_shape_not_plain_text(daemon, monkeypatch, caplog):
    token = daemon.auth.create_token("admin", "admin").secret
    api = TestClient(create_app(daemon), headers={"Authorization": f"Bearer {token}"},
                     raise_server_exceptions=False)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug at /srv/secret/path")

    monkeypatch.setattr(daemon, "status", broken)
    answer = api.get("/v1/status")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error" and "/srv" not in answer.text
    assert "a bug at /srv/secret/path" in caplog.text  # the log keeps the details

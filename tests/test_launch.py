"""A job's launch options (gang shape, stop signal and grace): checked at submit, stored, shown, and kept out of
the idempotency hash of requests that do not use them."""

import pytest
from fastapi.testclient import TestClient

from scheduler.api.app import create_app
from scheduler.errors import InvalidRequest
from scheduler.store.launch import DEFAULT_LAUNCH, Launch, check_launch


@pytest.mark.parametrize("args,field,accepted", [
    ((4, 3), "gpus_per_node", "must divide gpus (4)"),
    ((4, 8), "gpus_per_node", "from 1 to gpus (4)"),
    ((4, 0), "gpus_per_node", "from 1 to gpus (4)"),
    ((4, True), "gpus_per_node", "from 1 to gpus (4)"),
    ((1, None, "per-rack"), "launch", "per-gpu, per-node"),
    ((1, None, None, "SIGKILL"), "stop_signal", "SIGTERM, SIGINT"),
    ((1, None, None, 15), "stop_signal", "SIGTERM, SIGINT"),
    ((1, None, None, None, -1), "grace_s", "from 0 to 3600"),
    ((1, None, None, None, float("nan")), "grace_s", "from 0 to 3600"),
    ((1, None, None, None, "2m"), "grace_s", "from 0 to 3600"),
])
def test_bad_launch_options_are_refused_naming_the_field_and_what_is_accepted(args, field, accepted):
    with pytest.raises(InvalidRequest) as caught:
        check_launch(*args)
    assert caught.value.field == field and accepted in str(caught.value)


def test_launch_defaults_and_accepted_spellings():
    assert check_launch(2) == DEFAULT_LAUNCH == Launch(None, "per-gpu", "SIGTERM", 120.0)
    assert check_launch(4, 2, "per-node", "usr1", 30) == Launch(2, "per-node", "SIGUSR1", 30.0)
    assert Launch(stop_signal="SIGUSR1").signal_number == 10


@pytest.fixture
def api(daemon):
    token = daemon.auth.create_token("admin", "admin").secret
    return TestClient(create_app(daemon), headers={"Authorization": f"Bearer {token}"})


def test_launch_options_are_stored_and_shown_and_refused_with_a_400(api):
    body = {"kind": "synthetic", "spec": {"steps": 3}, "gpus": 4, "gpus_per_node": 2, "launch": "per-node",
            "stop_signal": "SIGUSR1", "grace_s": 30}
    created = api.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job = api.get(f"/v1/jobs/{created.json()['id']}").json()
    assert (job["gpus_per_node"], job["launch"], job["stop_signal"], job["grace_s"]) == (2, "per-node", "SIGUSR1", 30.0)
    plain = api.post("/v1/jobs", json={"kind": "synthetic", "spec": {"steps": 3}}).json()
    assert (plain["gpus_per_node"], plain["launch"], plain["stop_signal"], plain["grace_s"]) == \
        (None, "per-gpu", "SIGTERM", 120.0)
    refused = api.post("/v1/jobs", json={**body, "gpus_per_node": 3})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "gpus_per_node"
    assert api.get("/v1/jobs").json()["total"] == 2  # nothing half-stored


def test_a_retry_with_other_launch_options_is_a_conflict_and_plain_requests_hash_as_before(daemon):
    store = daemon.store
    plain = store.validate("synthetic", {"steps": 3}, idempotency_key="k")
    before = store.validate("synthetic", {"steps": 3}, idempotency_key="k", grace_s=120)
    assert plain.request_hash() == before.request_hash()  # defaults asked for explicitly change nothing
    other = store.validate("synthetic", {"steps": 3}, idempotency_key="k", grace_s=10)
    assert other.request_hash() != plain.request_hash()

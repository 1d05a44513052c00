"""Authentication and authorization of the REST API on real SQLite and PostgreSQL, and the daemon's refusal
to listen beyond loopback without tokens. No token, a wrong one, a revoked one, another user's job: refused."""

from __future__ import annotations

import json
import stat

import pytest
from fastapi.testclient import TestClient

from scheduler.api.app import create_app
from scheduler.store.auth import hash_token, local_token_name
from scheduler.cli.commands import main
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.store.engine import upgrade
from scheduler.store.models import ApiToken
from scheduler.errors import ConfigError

JOB = {"kind": "diffusion-train", "spec": {"steps": 5}}


@pytest.fixture
def daemon(upgraded_db_url, tmp_path):
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url, port=0))
    upgrade(daemon.engine)
    yield daemon
    daemon.engine.dispose()


@pytest.fixture
def app(daemon):
    return create_app(daemon)


def as_user(app, daemon, name, role="user"):
    token = daemon.auth.create_token(name, role).secret
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def test_tokens_are_stored_only_as_hashes(daemon):
    made = daemon.auth.create_token("alice", "user", "laptop")
    with daemon.store.sessions() as session:
        stored = session.query(ApiToken).one()
    assert stored.token_hash == hash_token(made.secret) and made.secret not in stored.token_hash
    assert made.secret.startswith("ws_") and len(made.secret) > 40
    [listed] = daemon.auth.list_tokens()
    assert listed["user"] == "alice" and listed["name"] == "laptop" and "token" not in listed


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer "}])
def test_requests_without_a_valid_token_are_refused(app, daemon, headers):
    as_user(app, daemon, "alice")
    anonymous = TestClient(app)
    for method, path in (("get", "/v1/jobs"), ("get", "/v1/status"), ("get", "/v1/history"), ("get", "/metrics"),
                         ("get", "/v1/jobs/abc"), ("post", "/v1/jobs/abc/cancel")):
        response = anonymous.request(method, path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    assert anonymous.post("/v1/jobs", json=JOB, headers=headers).status_code == 401
    assert daemon.store.list()[1] == 0


def test_the_openapi_description_is_public(app):
    described = TestClient(app).get("/v1/openapi.json")
    assert described.status_code == 200
    spec = described.json()
    assert "/v1/jobs" in spec["paths"] and "ErrorResponse" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_revoked_token_is_refused_at_once(app, daemon):
    alice = as_user(app, daemon, "alice")
    assert alice.get("/v1/jobs").status_code == 200
    [token] = daemon.auth.list_tokens()
    assert daemon.auth.revoke(token["id"])
    assert alice.get("/v1/jobs").status_code == 401
    assert not daemon.auth.revoke(token["id"])  # already revoked


def test_users_see_and_change_only_their_own_jobs(app, daemon):
    alice, bob = as_user(app, daemon, "alice"), as_user(app, daemon, "bob")
    admin = as_user(app, daemon, "root", "admin")
    mine = alice.post("/v1/jobs", json=JOB).json()
    theirs = bob.post("/v1/jobs", json=JOB).json()
    assert mine["user"] == "alice" and theirs["user"] == "bob"

    assert [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]] == [mine["id"]]
    assert alice.get("/v1/jobs").json()["total"] == 1
    # Another user's job answers as a job that does not exist: ids do not leak.
    for method, path in (("get", ""), ("post", "/cancel"), ("post", "/hold"), ("post", "/release"),
                         ("get", "/wait?timeout_s=0"), ("get", "/logs")):
        response = alice.request(method, f"/v1/jobs/{theirs['id']}{path}")
        assert response.status_code == 404, (path, response.text)
        missing = alice.request(method, f"/v1/jobs/000000000000{path}")
        assert missing.status_code == 404
        assert response.json()["error"]["message"].replace(theirs["id"], "000000000000") == \
            missing.json()["error"]["message"]
    assert bob.get(f"/v1/jobs/{theirs['id']}").json()["state"] == "pending"  # untouched
    assert alice.post("/v1/jobs", json={**JOB, "depends_on": [theirs["id"]]}).json()["error"]["field"] == \
        "depends_on"
    assert alice.get("/v1/jobs", params={"user": "bob"}).status_code == 403
    assert alice.get("/v1/history", params={"user": "bob"}).status_code == 403

    assert admin.get("/v1/jobs").json()["total"] == 2
    assert [j["id"] for j in admin.get("/v1/jobs", params={"user": "bob"}).json()["jobs"]] == [theirs["id"]]
    assert admin.post(f"/v1/jobs/{theirs['id']}/cancel").json()["state"] == "cancelled"


def test_only_admins_manage_tokens(app, daemon):
    alice = as_user(app, daemon, "alice")
    admin = as_user(app, daemon, "root", "admin")
    assert alice.get("/v1/tokens").status_code == 403
    assert alice.post("/v1/tokens", json={"user": "mallory", "role": "admin"}).status_code == 403

    made = admin.post("/v1/tokens", json={"user": "carol", "name": "ci"})
    assert made.status_code == 201 and made.json()["role"] == "user"
    carol = TestClient(app, headers={"Authorization": f"Bearer {made.json()['token']}"})
    assert carol.get("/v1/whoami").json() == {"user": "carol", "role": "user", "token_id": made.json()["id"]}
    assert "token" not in json.dumps(admin.get("/v1/tokens").json()["tokens"][0]).replace('"token_', "")
    assert admin.delete(f"/v1/tokens/{made.json()['id']}").json()["revoked"] is True
    assert carol.get("/v1/whoami").status_code == 401
    assert admin.delete(f"/v1/tokens/{made.json()['id']}").status_code == 404
    assert admin.post("/v1/tokens", json={"user": "x", "role": "root"}).json()["error"]["field"] == "role"


def test_a_local_daemon_writes_its_own_token_readable_by_the_user_only(daemon):
    daemon.start_api_only()
    try:
        path = daemon.settings.data_dir / "daemon.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        written = json.loads(path.read_text())
        assert written == {"url": daemon.url, "token": daemon.token}
        from scheduler.client import Client

        client = Client(url=daemon.url, token=written["token"])
        assert client.whoami()["role"] == "admin"
        [token] = daemon.auth.list_tokens()
        assert token["name"] == local_token_name(daemon.settings.data_dir)
        assert not daemon.auth.configured()  # the local token alone is not "authentication configured"
    finally:
        daemon.stop()


def test_a_restarted_local_daemon_revokes_its_previous_token(daemon):
    first = daemon.auth.local_token(daemon.settings.data_dir).secret
    second = daemon.auth.local_token(daemon.settings.data_dir).secret
    assert daemon.auth.authenticate(first) is None and daemon.auth.authenticate(second).is_admin


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::"])
def test_the_daemon_refuses_to_listen_beyond_loopback_without_tokens(daemon, host):
    from dataclasses import replace

    daemon.settings = replace(daemon.settings, host=host)
    with pytest.raises(ConfigError, match="refusing to listen"):
        daemon._check_listen_address()
    daemon.auth.create_token("root", "admin")
    daemon._check_listen_address()  # configured now


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_configured_tokens(daemon, host):
    from dataclasses import replace

    daemon.settings = replace(daemon.settings, host=host)
    daemon._check_listen_address()


def test_token_commands_work_on_the_database_directly(db_url, capsys):
    assert main(["token", "create", "--db", db_url, "--user", "alice", "--role", "admin", "--name", "first"]) == 0
    out = capsys.readouterr().out
    secret = out.splitlines()[1]
    assert "token 1 for alice (admin)" in out and secret.startswith("ws_")
    assert main(["token", "list", "--db", db_url]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "first" in listing and secret not in listing
    assert main(["token", "revoke", "--db", db_url, "1"]) == 0
    assert main(["token", "revoke", "--db", db_url, "1"]) == 1
    assert "no active token with id 1" in capsys.readouterr().err
    assert main(["token", "list", "--db", db_url, "--all", "--format", "json"]) == 0
    [token] = json.loads(capsys.readouterr().out)
    assert token["revoked_at"] is not None


def test_status_does_not_show_other_users_job_ids(app, daemon):
    alice, bob = as_user(app, daemon, "alice"), as_user(app, daemon, "bob")
    mine, theirs = alice.post("/v1/jobs", json=JOB).json()["id"], bob.post("/v1/jobs", json=JOB).json()["id"]
    daemon._set_inventory([{"worker_id": "gpu-0", "node_id": "n", "zone": "DE", "busy_job": mine},
                           {"worker_id": "gpu-1", "node_id": "n", "zone": "DE", "busy_job": theirs}])
    gpus = {g["worker_id"]: g["busy_job"] for g in alice.get("/v1/status").json()["gpus"]}
    assert gpus == {"gpu-0": mine, "gpu-1": "another user's job"}
    admin = as_user(app, daemon, "root", "admin")
    assert {g["busy_job"] for g in admin.get("/v1/status").json()["gpus"]} == {mine, theirs}

"""Local daemons' own tokens (daemon.json) when several daemons share one database, on real SQLite and
PostgreSQL: each daemon revokes only its own earlier token, so a standby's start leaves the leader's local
clients working, and a daemon restarted still revokes the token it made before."""

from __future__ import annotations

import json

import pytest

from scheduler.client import ApiError, Client
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.errors import InvalidRequest
from scheduler.store.auth import LOCAL_TOKEN_NAME, MAX_NAME, local_token_name
from scheduler.store.models import ApiToken


def _daemon(data_dir, database_url) -> Daemon:
    data_dir.mkdir(exist_ok=True)
    return Daemon(Settings(data_dir=data_dir, database_url=database_url, port=0))


@pytest.fixture
def two_dirs(tmp_path):
    return tmp_path / "host-a", tmp_path / "host-b"


@pytest.fixture
def auth(daemon):
    """The token store on the test's database: every daemon's tokens are there, told apart by the data directory
    and host that ``local_token`` takes."""
    return daemon.auth


def test_two_daemons_keep_each_others_local_tokens_and_a_restart_revokes_only_its_own(auth, two_dirs):
    first_dir, second_dir = two_dirs
    first = auth.local_token(first_dir)
    second = auth.local_token(second_dir)
    assert first.name != second.name
    assert auth.authenticate(first.secret).is_admin and auth.authenticate(second.secret).is_admin

    first_again = auth.local_token(first_dir)  # the first daemon restarted
    assert auth.authenticate(first.secret) is None
    assert auth.authenticate(first_again.secret).is_admin and auth.authenticate(second.secret).is_admin
    active = {t["name"] for t in auth.list_tokens()}
    assert active == {first.name, second.name}
    assert not auth.configured()  # local tokens alone, however many, are not configured authentication


def test_the_same_data_directory_on_two_hosts_is_two_installations(auth, tmp_path):
    on_a = auth.local_token(tmp_path, host="node-a")
    on_b = auth.local_token(tmp_path, host="node-b")
    assert auth.authenticate(on_a.secret) and auth.authenticate(on_b.secret)
    assert on_a.name == f"{LOCAL_TOKEN_NAME} on node-a:{tmp_path.resolve()}"


def test_a_local_token_named_before_daemons_named_theirs_is_revoked_at_a_restart(auth, daemon, tmp_path):
    legacy = auth.local_token(tmp_path)
    with daemon.store.sessions.begin() as session:  # as an earlier version named it
        session.get(ApiToken, legacy.id).name = LOCAL_TOKEN_NAME
    fresh = auth.local_token(tmp_path)
    assert auth.authenticate(legacy.secret) is None and auth.authenticate(fresh.secret).is_admin


def test_a_long_installation_name_is_hashed_to_fit_and_stays_the_same(auth, tmp_path):
    deep = tmp_path.joinpath(*["d" * 60] * 4)
    name = local_token_name(deep, host="node-a")
    assert len(name) <= MAX_NAME and name.startswith(LOCAL_TOKEN_NAME)
    assert name == local_token_name(deep, host="node-a") != local_token_name(deep, host="node-b")
    first = auth.local_token(deep, host="node-a")
    other = auth.local_token(deep, host="node-b")
    again = auth.local_token(deep, host="node-a")
    assert first.name == name and auth.authenticate(first.secret) is None
    assert auth.authenticate(again.secret) and auth.authenticate(other.secret)


def test_other_tokens_may_not_take_a_local_daemons_name(auth, daemon, tmp_path):
    auth.local_token(tmp_path)
    for name in (LOCAL_TOKEN_NAME, local_token_name(tmp_path), f"{LOCAL_TOKEN_NAME} mine"):
        with pytest.raises(InvalidRequest) as refused:
            auth.create_token("alice", "admin", name)
        assert refused.value.field == "name"
    assert [t["name"] for t in auth.list_tokens()] == [local_token_name(tmp_path)]  # nothing else made
    assert auth.bootstrap_admin("a-bootstrap-secret-0123456789") is not None  # the local token is no admin yet


def test_a_standby_daemons_start_leaves_the_first_daemons_daemon_json_working(upgraded_db_url, two_dirs,
                                                                           monkeypatch):
    for variable in ("WATTSCHED_URL", "WATTSCHED_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    first_dir, second_dir = two_dirs

    def local_client(data_dir) -> Client:
        """What the CLI on that daemon's machine uses: the address and token in its daemon.json."""
        monkeypatch.setenv("WATTSCHED_DATA_DIR", str(data_dir))
        return Client(timeout_s=30)

    first = _daemon(first_dir, upgraded_db_url).start_api_only()
    second = None
    try:
        old_first_token = json.loads((first_dir / "daemon.json").read_text())["token"]
        second = _daemon(second_dir, upgraded_db_url).start_api_only()
        assert local_client(first_dir).whoami()["role"] == "admin"
        assert local_client(second_dir).whoami()["role"] == "admin"

        first.stop()  # the first daemon restarted: its old token goes, the other daemon's stays
        first = _daemon(first_dir, upgraded_db_url).start_api_only()
        assert local_client(first_dir).whoami()["role"] == "admin"
        assert local_client(second_dir).whoami()["role"] == "admin"
        with pytest.raises(ApiError) as refused:
            Client(url=first.url, token=old_first_token, timeout_s=30).whoami()
        assert refused.value.status == 401
    finally:
        first.stop()
        if second is not None:
            second.stop()

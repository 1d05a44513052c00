"""docker/compose.yaml can start: its commands parse, and its head's daemon, listening on every address on a fresh
database, gets past the listen-address check with the first admin token it is handed (WATTSCHED_ADMIN_TOKEN).

No Docker engine here: each service's commands are checked as processes and parsers. The head's daemon runs as
`wattsched <the compose file's arguments>` with the head's environment, except what needs the other containers:
a SQLite file in place of the PostgreSQL service, and a local Ray in place of the head's `ray start`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from fakes import FakeClock

from scheduler.cli.commands import build_parser
from scheduler.config import Settings
from scheduler.daemon.admin_token import bootstrap_admin_token
from scheduler.daemon.daemon import Daemon
from scheduler.errors import ConfigError
from scheduler.store.auth import TokenStore
from scheduler.store.engine import make_engine, make_session_factory, upgrade

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
BIN = Path(sys.executable).parent
SECRET = "compose-test-admin-secret-0123456789"
# Generous: it only bounds a test that fails; the daemon starts a local Ray on a busy machine.
START_TIMEOUT_S = 180


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (the forms the file uses), with ``env``."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise LookupError(f"{name}: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, str(value))


def commands(service: dict) -> list[list[str]]:
    """The command lines a service runs: its command, or each step of a `bash -c "a && exec b"`."""
    command = service["command"]
    argv = command if isinstance(command, list) else shlex.split(command)
    if argv[:2] != ["bash", "-c"]:
        return [argv]
    steps = [shlex.split(step) for step in re.split(r"&&|;", argv[2])]
    return [step[1:] if step[0] == "exec" else step for step in steps]


def all_commands(program: str) -> list[list[str]]:
    found = [argv for s in COMPOSE["services"].values() if "command" in s for argv in commands(s)]
    return [argv for argv in found if argv[0] == program]


def head_environment(env: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(v, env) for k, v in COMPOSE["services"]["head"]["environment"].items()}


# --- the file ------------------------------------------------------------------------------------------------


def test_every_wattsched_command_of_the_compose_file_parses():
    wattsched = all_commands("wattsched")
    assert wattsched, "the head runs the daemon"
    for argv in wattsched:
        build_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown command or option


def test_every_ray_command_of_the_compose_file_parses():
    ray_start = pytest.importorskip("ray.scripts.scripts").start  # the click command behind `ray start`
    ray_commands = all_commands("ray")
    assert len(ray_commands) == 3  # the head and two GPU nodes
    for argv in ray_commands:
        assert argv[1] == "start"
        # Parses as `ray start` would, hidden options (--labels) included, without starting anything; an unknown
        # option or a bad value raises click's usage error.
        ray_start.make_context("ray start", argv[2:])


def test_the_head_needs_an_admin_token_from_the_environment():
    with pytest.raises(LookupError, match="WATTSCHED_ADMIN_TOKEN"):
        head_environment({})
    assert head_environment({"WATTSCHED_ADMIN_TOKEN": SECRET})["WATTSCHED_ADMIN_TOKEN"] == SECRET


# --- the bootstrap -------------------------------------------------------------------------------------------


@pytest.fixture
def tokens(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(engine)
    yield TokenStore(make_session_factory(engine), FakeClock(datetime(2026, 1, 1, tzinfo=timezone.utc)))
    engine.dispose()


def test_the_first_admin_token_is_made_once_from_the_secret_and_stored_hashed(tokens, tmp_path):
    settings = Settings(data_dir=tmp_path, admin_token=SECRET)
    assert bootstrap_admin_token(tokens, settings) is True
    assert tokens.configured()
    principal = tokens.authenticate(SECRET)
    assert (principal.user, principal.role) == ("admin", "admin")
    assert bootstrap_admin_token(tokens, settings) is False  # a restart makes no second one
    assert len(tokens.list_tokens()) == 1
    assert SECRET not in repr(settings)

    [made] = tokens.list_tokens()
    assert tokens.revoke(made["id"])
    assert bootstrap_admin_token(tokens, settings) is False  # a revoked secret is not brought back
    assert tokens.authenticate(SECRET) is None


def test_an_existing_admin_token_wins_and_the_secret_may_come_from_a_file(tokens, tmp_path):
    secret_file = tmp_path / "admin_token"
    secret_file.write_text(SECRET + "\n")
    tokens.create_token("alice", "admin")
    assert bootstrap_admin_token(tokens, Settings(data_dir=tmp_path, admin_token_file=str(secret_file))) is False
    assert tokens.authenticate(SECRET) is None


def test_a_secret_file_is_read_without_its_line_end(tokens, tmp_path):
    secret_file = tmp_path / "admin_token"
    secret_file.write_text(SECRET + "\n")
    assert bootstrap_admin_token(tokens, Settings(data_dir=tmp_path, admin_token_file=str(secret_file)))
    assert tokens.authenticate(SECRET).role == "admin"


def test_a_short_or_missing_secret_is_refused_naming_the_variable(tokens, tmp_path):
    with pytest.raises(ConfigError, match="WATTSCHED_ADMIN_TOKEN: .*at least 16"):
        bootstrap_admin_token(tokens, Settings(data_dir=tmp_path, admin_token="short"))
    with pytest.raises(ConfigError, match="WATTSCHED_ADMIN_TOKEN_FILE=.* cannot be read"):
        bootstrap_admin_token(tokens, Settings(data_dir=tmp_path, admin_token_file=str(tmp_path / "missing")))


def test_without_a_token_a_daemon_on_every_address_is_still_refused(tmp_path):
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'w.db'}", host="0.0.0.0",
                             port=0))
    try:
        with pytest.raises(Exception, match="token"):
            daemon.start_api_only()
    finally:
        daemon.engine.dispose()


# --- the head's daemon as a process --------------------------------------------------------------------------


@pytest.mark.ray
def test_the_heads_daemon_starts_on_a_fresh_database_and_its_admin_token_works(tmp_path):
    [daemon_argv] = [argv for argv in all_commands("wattsched") if argv[1] == "daemon"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTSCHED_")}
    env.update(head_environment({"WATTSCHED_ADMIN_TOKEN": SECRET}))
    # What the other containers provide: the database service and the Ray head started before the daemon.
    env.update(WATTSCHED_DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}", WATTSCHED_DATA_DIR=str(tmp_path),
               WATTSCHED_PORT="0")
    del env["WATTSCHED_RAY_ADDRESS"]
    with open(tmp_path / "out.log", "w") as out:
        process = subprocess.Popen([str(BIN / "wattsched"), *daemon_argv[1:]], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    address = tmp_path / "daemon.json"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not address.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # polls a file the daemon writes once it listens
        log = (tmp_path / "out.log").read_text()
        assert address.exists(), f"the daemon did not start (exit {process.poll()}):\n{log[-3000:]}"
        url = json.loads(address.read_text())["url"].replace("0.0.0.0", "127.0.0.1")
        from scheduler.client import Client

        assert Client(url=url, token=SECRET).whoami()["user"] == "admin"
        assert Client(url=url, token=SECRET).whoami()["role"] == "admin"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # the daemon stops its local Ray on Ctrl-C
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

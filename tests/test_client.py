"""The Python client against real HTTP on loopback.

``ApiDouble`` is a test double of the daemon's REST API (v1) for client-side behaviour: an in-memory dict of
jobs behind FastAPI, served by uvicorn on an ephemeral port. It checks how the client parses answers, maps
errors, loops over the long poll and sends its token, not how the daemon schedules. tests/test_cli.py reuses it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from scheduler.client import (
    DEFAULT_URL, ApiError, Client, ClientError, Conflict, ConnectionFailed, History, InvalidRequest, Job,
    JobEnergy, NotFound, Run, Unauthorized, WaitTimeout,
)

TERMINAL = {"succeeded", "failed", "cancelled"}
ENERGY = {
    "gpu_energy_j": 1000.0, "cpu_energy_j": 234.0, "energy_j": 1234.0, "energy_kwh": 1234.0 / 3.6e6,
    "methods": ["simulated", "estimate"], "gpu_method": "simulated", "cpu_method": "estimate",
    "avg_power_w": 123.4, "peak_power_w": 150.0, "emissions_g": 0.12, "intensity_g_per_kwh": 350.0,
    "carbon_source": "static",
}


def iso(at: datetime) -> str:
    return at.isoformat()


class _Refusal(Exception):
    """An error answer in the contract's shape."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        self.status, self.code, self.message, self.field = status, code, message, field


class ApiDouble:
    """The daemon's API over a dict of jobs. Tests drive job states with ``start`` and ``finish``."""

    def __init__(self) -> None:
        self.app = self._build()
        self.url = ""  # where it is served, once it is
        self.reset()

    def reset(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.token: str | None = None
        self.max_wait_s = 30.0  # the server's cap on one long poll; tests lower it to make the client loop
        self.wait_calls = 0
        self.on_wait: Callable[[int], None] | None = None  # called with the count of /wait requests so far
        self.authorizations: list[str | None] = []

    # --- driving jobs from a test ---

    def start(self, job_id: str) -> None:
        job = self.jobs[job_id]
        now = datetime.now(timezone.utc)
        job.update(state="running", reason=None, started_at=iso(now - timedelta(seconds=65)))
        job["runs"].append({"id": len(job["runs"]) + 1, "attempt": len(job["runs"]) + 1, "node_id": "node-a",
                            "zone": "DE", "gpu_ids": [0], "power_cap_w": 250.0,
                            "started_at": job["started_at"], "ended_at": None, "exit_status": "running",
                            "exit_code": None})
        job["energy"] = dict(ENERGY)

    def finish(self, job_id: str, state: str = "succeeded") -> None:
        job = self.jobs[job_id]
        if job["state"] != "running":
            self.start(job_id)
        job.update(state=state, finished_at=iso(datetime.now(timezone.utc)),
                   result={"num_images": 4} if state == "succeeded" else None,
                   error="CUDA out of memory" if state == "failed" else None)
        job["runs"][-1].update(ended_at=job["finished_at"], exit_status=state)

    # --- the API ---

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.exception_handler(_Refusal)
        async def refuse(_request: Request, exc: _Refusal) -> JSONResponse:
            return JSONResponse({"error": {"code": exc.code, "message": exc.message, "field": exc.field}},
                                status_code=exc.status)

        @app.middleware("http")
        async def authenticate(request: Request, call_next):
            header = request.headers.get("authorization")
            self.authorizations.append(header)
            if self.token is not None and header != f"Bearer {self.token}":
                return JSONResponse({"error": {"code": "unauthorized", "message": "missing or wrong bearer token",
                                               "field": None}}, status_code=401)
            return await call_next(request)

        def job_or_404(job_id: str) -> dict[str, Any]:
            if job_id not in self.jobs:
                raise _Refusal(404, "not_found", f"no job with id {job_id!r}", "job_id")
            return self.jobs[job_id]

        @app.post("/v1/jobs", status_code=201)
        def submit(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
            steps = body.get("spec", {}).get("steps", 1)
            if not isinstance(steps, int) or steps <= 0:
                raise _Refusal(400, "invalid_spec", "spec.steps: must be a positive integer", "spec.steps")
            job_id = f"j{len(self.jobs) + 1:04d}"
            submitted = datetime.now(timezone.utc) + timedelta(milliseconds=len(self.jobs))  # distinct, ordered
            self.jobs[job_id] = {
                "id": job_id, "kind": body["kind"], "spec": body.get("spec", {}), "gpus": body.get("gpus", 1),
                "state": "pending", "reason": "waiting for a free GPU in DE", "zones": body.get("zones") or [],
                "deadline": body.get("deadline"), "interruptible": body.get("interruptible", False),
                "cancel_requested": False, "submitted_at": iso(submitted), "started_at": None,
                "finished_at": None, "progress": None, "result": None, "error": None, "energy": None,
                "runs": [], "added_in_a_later_version": {"ignored": True},
            }
            return self.jobs[job_id]

        @app.get("/v1/jobs")
        def list_jobs(state: str | None = None, kind: str | None = None, limit: int = 100,
                      offset: int = 0) -> dict[str, Any]:
            jobs = [j for j in self.jobs.values()
                    if (state is None or j["state"] == state) and (kind is None or j["kind"] == kind)]
            jobs.sort(key=lambda j: j["submitted_at"], reverse=True)
            return {"jobs": jobs[offset:offset + limit], "total": len(jobs)}

        @app.get("/v1/jobs/{job_id}")
        def get(job_id: str) -> dict[str, Any]:
            return job_or_404(job_id)

        @app.post("/v1/jobs/{job_id}/cancel")
        def cancel(job_id: str) -> dict[str, Any]:
            job = job_or_404(job_id)
            if job["state"] in TERMINAL:
                raise _Refusal(409, "conflict", f"job {job_id} is already {job['state']}")
            if job["state"] == "running":
                job["cancel_requested"] = True
            else:
                job.update(state="cancelled", reason="cancelled by the user",
                           finished_at=iso(datetime.now(timezone.utc)))
            return job

        @app.get("/v1/jobs/{job_id}/wait")
        async def wait(job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
            job = job_or_404(job_id)
            self.wait_calls += 1
            if self.on_wait is not None:
                self.on_wait(self.wait_calls)
            give_up_at = time.monotonic() + min(timeout_s, self.max_wait_s)
            while job["state"] not in TERMINAL and time.monotonic() < give_up_at:
                await asyncio.sleep(0.005)
            return job

        @app.get("/v1/history")
        def history(since: str | None = None, until: str | None = None, kind: str | None = None) -> dict:
            rows = []
            for job in self.jobs.values():
                started = job["started_at"]
                if started is None or (kind and job["kind"] != kind) or (since and started < since) or (
                        until and started >= until):
                    continue
                energy = job["energy"] or {}
                duration = None
                if job["finished_at"]:
                    duration = (datetime.fromisoformat(job["finished_at"])
                                - datetime.fromisoformat(started)).total_seconds()
                rows.append({
                    "job_id": job["id"], "kind": job["kind"], "state": job["state"], "zone": "DE",
                    "submitted_at": job["submitted_at"], "started_at": started, "finished_at": job["finished_at"],
                    "duration_s": duration, "methods": energy.get("methods", []),
                    **{k: energy.get(k) for k in ("gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh",
                                                  "emissions_g", "intensity_g_per_kwh", "carbon_source")},
                })
            totals = {"jobs": len(rows)}
            for key in ("gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh", "emissions_g"):
                totals[key] = sum(r[key] or 0 for r in rows)
            return {"jobs": rows, "totals": totals}

        @app.get("/v1/status")
        def status() -> dict[str, Any]:
            return {
                "version": "0.1.0", "policy": "fifo", "database": "sqlite", "carbon_source": "static",
                "gpus": [{"worker_id": "gpu-0", "node_id": "node-a", "zone": "DE", "logical": True,
                          "gpu_name": "A100-SXM4-40GB", "busy_job": None}],
                "queue": {"pending": sum(j["state"] == "pending" for j in self.jobs.values())},
            }

        return app


class LoopbackServer:
    """Serves an ASGI app with uvicorn in a thread on an ephemeral loopback port, for a ``with`` block."""

    def __init__(self, app) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        give_up_at = time.monotonic() + 10
        while True:
            try:
                requests.get(self.url + "/v1/status", timeout=1)
                return self
            except requests.ConnectionError:
                if time.monotonic() > give_up_at:
                    raise
                time.sleep(0.01)

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()


class FlakyServer:
    """A TCP server that hangs up on its first ``drops`` connections, then answers each with ``body``.

    Counts connections, so a test can see how many times the client tried.
    """

    def __init__(self, drops: int, body: dict[str, Any]) -> None:
        self.drops = drops
        self.connections = 0
        self._payload = json.dumps(body).encode()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FlakyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._socket.shutdown(socket.SHUT_RDWR)  # wakes accept(), which close() alone does not on Linux
        self._socket.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                self.connections += 1
                if self.connections <= self.drops:
                    continue
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                   b"Content-Length: %d\r\n\r\n%s" % (len(self._payload), self._payload))


def free_port_url() -> str:
    """The URL of a loopback port where nothing listens."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def served_api():
    double = ApiDouble()
    with LoopbackServer(double.app) as server:
        double.url = server.url
        yield double


@pytest.fixture
def api(served_api) -> ApiDouble:
    """The API double, served, with no jobs and no token."""
    served_api.reset()
    return served_api


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No WATTSCHED_URL or token from the developer's shell, and an empty data dir (no daemon.json)."""
    monkeypatch.delenv("WATTSCHED_URL", raising=False)
    monkeypatch.delenv("WATTSCHED_TOKEN", raising=False)
    monkeypatch.setenv("WATTSCHED_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def client(api) -> Client:
    # Generous: a busy machine can keep the in-process server from answering for seconds (5 s was seen to run out).
    with Client(api.url, timeout_s=60) as c:
        yield c


# --- parsing ------------------------------------------------------------------------------------------


def test_submit_returns_the_parsed_job(client, api):
    deadline = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    job = client.submit("diffusion-train", {"steps": 10}, gpus=2, deadline=deadline, zones=["DE", "FR"],
                        interruptible=True)

    assert isinstance(job, Job)
    assert (job.kind, job.state, job.gpus, job.zones) == ("diffusion-train", "pending", 2, ("DE", "FR"))
    assert job.spec == {"steps": 10} and job.interruptible and not job.cancel_requested
    assert job.deadline == deadline
    assert job.submitted_at.tzinfo is not None and job.started_at is None and job.energy is None
    assert job.reason == "waiting for a free GPU in DE"
    assert api.jobs[job.id]["deadline"] == "2030-01-02T03:04:05+00:00"


def test_unknown_fields_are_ignored_and_kept_in_raw(client):
    job = client.submit("diffusion-sample", {})
    assert job.raw["added_in_a_later_version"] == {"ignored": True}
    assert not hasattr(job, "added_in_a_later_version")


def test_deadline_accepts_an_iso_string(client, api):
    job = client.submit("diffusion-sample", {}, deadline="2030-01-01T00:00:00Z")
    assert api.jobs[job.id]["deadline"] == "2030-01-01T00:00:00Z"
    assert job.deadline == datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_get_parses_runs_and_energy(client, api):
    job_id = client.submit("diffusion-train", {"steps": 5}).id
    api.finish(job_id)

    job = client.get(job_id)

    assert job.state == "succeeded" and job.terminal and job.result == {"num_images": 4}
    assert isinstance(job.energy, JobEnergy)
    assert job.energy.methods == ("simulated", "estimate")
    assert (job.energy.energy_j, job.energy.gpu_method, job.energy.carbon_source) == (1234.0, "simulated", "static")
    [run] = job.runs
    assert isinstance(run, Run)
    assert (run.attempt, run.zone, run.gpu_ids, run.power_cap_w, run.exit_status) == (1, "DE", (0,), 250.0,
                                                                                       "succeeded")
    assert run.started_at < run.ended_at


def test_list_is_newest_first_and_filters(client, api):
    first = client.submit("diffusion-train", {}).id
    second = client.submit("diffusion-sample", {}).id
    third = client.submit("diffusion-sample", {}).id
    api.start(third)

    assert [j.id for j in client.list()] == [third, second, first]
    assert [j.id for j in client.list(kind="diffusion-sample")] == [third, second]
    assert [j.id for j in client.list(state="running")] == [third]
    assert [j.id for j in client.list(limit=1, offset=1)] == [second]


def test_history_parses_rows_totals_and_methods(client, api):
    for _ in range(2):
        api.finish(client.submit("diffusion-train", {}).id)
    client.submit("diffusion-train", {})  # never started: not in the history

    history = client.history(since=datetime.now(timezone.utc) - timedelta(days=1))

    assert isinstance(history, History)
    assert len(history.jobs) == 2 and history.totals.jobs == 2
    assert history.totals.energy_j == pytest.approx(2468.0)
    assert history.methods == ("simulated", "estimate")
    assert history.jobs[0].duration_s > 0 and history.jobs[0].finished_at.tzinfo is not None
    assert client.history(since="2099-01-01T00:00:00+00:00").jobs == ()


def test_status_is_the_daemon_json(client):
    status = client.status()
    assert status["policy"] == "fifo" and status["gpus"][0]["zone"] == "DE"


def test_an_answer_that_is_not_the_api_is_a_client_error():
    with FlakyServer(drops=0, body={"not": "a job"}) as server, Client(server.url) as client:
        with pytest.raises(ClientError, match="same version"):
            client.get("j0001")


# --- errors -------------------------------------------------------------------------------------------


def test_invalid_spec_names_the_field(client):
    with pytest.raises(InvalidRequest) as caught:
        client.submit("diffusion-train", {"steps": 0})
    error = caught.value
    assert (error.status, error.code, error.field) == (400, "invalid_spec", "spec.steps")
    assert str(error) == "spec.steps: must be a positive integer"
    assert isinstance(error, ApiError) and isinstance(error, ClientError)


def test_unknown_job_is_not_found(client):
    with pytest.raises(NotFound) as caught:
        client.get("nope")
    assert (caught.value.status, caught.value.code, caught.value.field) == (404, "not_found", "job_id")


def test_cancel_a_pending_job_is_immediate(client):
    job = client.cancel(client.submit("diffusion-train", {}).id)
    assert job.state == "cancelled" and job.terminal


def test_cancel_a_running_job_is_a_request(client, api):
    job_id = client.submit("diffusion-train", {}).id
    api.start(job_id)
    job = client.cancel(job_id)
    assert job.state == "running" and job.cancel_requested and not job.terminal


def test_cancel_a_finished_job_conflicts(client, api):
    job_id = client.submit("diffusion-train", {}).id
    api.finish(job_id)
    with pytest.raises(Conflict) as caught:
        client.cancel(job_id)
    assert caught.value.status == 409 and "already succeeded" in caught.value.message


# --- waiting ------------------------------------------------------------------------------------------


def test_wait_loops_over_the_long_poll_until_the_job_is_over(client, api):
    job_id = client.submit("diffusion-train", {}).id
    api.max_wait_s = 0.02  # every long poll comes back early, so the client must ask again

    def finish_on_third_poll(calls: int) -> None:
        if calls == 3:
            api.finish(job_id)

    api.on_wait = finish_on_third_poll

    job = client.wait(job_id, timeout=10)

    assert job.state == "succeeded" and api.wait_calls == 3


def test_wait_times_out_with_the_last_seen_job(client, api):
    job_id = client.submit("diffusion-train", {}).id
    started = time.monotonic()

    with pytest.raises(WaitTimeout) as caught:
        client.wait(job_id, timeout=0.3)

    # at least its timeout, and not a server's whole long poll (30 s here) past it
    assert 0.3 <= time.monotonic() - started < 15
    assert caught.value.job.id == job_id and caught.value.job.state == "pending"
    assert "still pending after 0.3 s" in str(caught.value)


# --- connections and retries --------------------------------------------------------------------------


def test_unreachable_daemon_says_how_to_start_it():
    with pytest.raises(ConnectionFailed) as caught:
        Client(free_port_url()).status()
    assert "is the daemon running? start it with `wattsched daemon`, or set WATTSCHED_URL" in str(caught.value)


def test_get_is_retried_on_connection_errors():
    with FlakyServer(drops=2, body={"policy": "fifo"}) as server:
        assert Client(server.url).status() == {"policy": "fifo"}
    assert server.connections == 3


def test_get_gives_up_after_three_tries():
    with FlakyServer(drops=10, body={}) as server:
        with pytest.raises(ConnectionFailed):
            Client(server.url).status()
    assert server.connections == 3


def test_post_is_not_retried():
    # A POST that failed mid-way may have been applied: sending it again could submit a job twice.
    with FlakyServer(drops=10, body={}) as server:
        with pytest.raises(ConnectionFailed):
            Client(server.url).cancel("j0001")
    assert server.connections == 1


# --- where to connect, and the token ------------------------------------------------------------------


def test_url_defaults_to_the_local_daemon():
    assert Client().url == DEFAULT_URL


def test_url_comes_from_the_environment_first(monkeypatch, isolated_env):
    (isolated_env / "daemon.json").write_text(json.dumps({"url": "http://127.0.0.1:9999", "token": "t"}))
    monkeypatch.setenv("WATTSCHED_URL", "http://cluster.example:8765/")
    assert Client().url == "http://cluster.example:8765"
    assert Client("http://explicit:1").url == "http://explicit:1"


def test_a_url_without_scheme_is_refused():
    with pytest.raises(ClientError, match="http://"):
        Client("localhost:8765")


def test_token_is_sent_as_bearer(api):
    api.token = "s3cret"
    with pytest.raises(Unauthorized) as caught:
        Client(api.url).status()
    assert caught.value.status == 401
    assert Client(api.url, token="s3cret").status()["policy"] == "fifo"
    assert api.authorizations[-1] == "Bearer s3cret"


def test_token_from_the_environment(api, monkeypatch):
    api.token = "from-env"
    monkeypatch.setenv("WATTSCHED_TOKEN", "from-env")
    assert Client(api.url).status()["policy"] == "fifo"


def test_local_daemon_file_gives_url_and_token(api, isolated_env):
    api.token = "local"
    (isolated_env / "daemon.json").write_text(json.dumps({"url": api.url, "token": "local"}))
    client = Client()
    assert client.url == api.url
    assert client.status()["policy"] == "fifo"


def test_local_daemon_token_is_not_sent_to_another_daemon(api, isolated_env):
    (isolated_env / "daemon.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "local"}))
    Client(api.url).status()
    assert api.authorizations[-1] is None


def test_importing_the_client_stays_light():
    code = ("import scheduler.client, sys; heavy = {'torch', 'ray', 'sqlalchemy', 'fastapi'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- against the real API (no Ray): idempotent submission, hold/release, logs, tokens ---------------------


@pytest.fixture
def real_api(tmp_path):
    from fastapi.testclient import TestClient  # noqa: F401  (the app is served for real below)

    from scheduler.api.app import create_app
    from scheduler.config import Settings
    from scheduler.daemon.daemon import Daemon
    from scheduler.store.engine import upgrade

    daemon = Daemon(Settings(data_dir=tmp_path / "daemon", database_url=f"sqlite:///{tmp_path / 'w.db'}"))
    upgrade(daemon.engine)
    with LoopbackServer(create_app(daemon)) as server:
        yield daemon, server.url, daemon.auth.create_token("alice", "admin").secret
    daemon.engine.dispose()


def test_submission_is_idempotent_and_carries_the_new_options(real_api):
    daemon, url, token = real_api
    client = Client(url, token)
    begin = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)
    first = client.submit("diffusion-train", {"steps": 5}, idempotency_key="nightly-1", priority=5, hold=True,
                          time_limit_s=600, not_before=begin)
    again = client.submit("diffusion-train", {"steps": 5}, idempotency_key="nightly-1", priority=5, hold=True,
                          time_limit_s=600, not_before=begin)
    assert first.id == again.id and daemon.store.list()[1] == 1
    assert first.hold and first.priority == 5 and first.time_limit_s == 600 and first.user == "alice"
    assert first.not_before == begin
    with pytest.raises(Conflict) as caught:
        client.submit("diffusion-train", {"steps": 6}, idempotency_key="nightly-1")
    assert caught.value.field == "idempotency_key"
    released = client.release(first.id)
    assert not released.hold and client.hold(first.id).hold
    assert client.submit("diffusion-train", {"steps": 5}).id != first.id  # a fresh key each call
    dependent = client.submit("diffusion-train", {}, depends_on=first.id)
    assert dependent.depends_on == (first.id,)


def test_a_submission_is_retried_with_its_key_after_a_connection_error():
    answer = {"id": "j1", "kind": "diffusion-train", "state": "pending"}
    with FlakyServer(drops=2, body=answer) as server:
        job = Client(server.url).submit("diffusion-train", {})
    assert job.id == "j1" and server.connections == 3


def test_logs_stream_until_the_job_is_over(real_api):
    daemon, url, token = real_api
    client = Client(url, token)
    job = client.submit("diffusion-train", {"steps": 5})
    log = Path(job.raw["workdir"]) / "stderr.log"
    log.parent.mkdir(parents=True)
    log.write_text("first line\n")
    assert "".join(client.logs(job.id)) == "first line\n"

    def write_then_finish():
        time.sleep(0.3)
        with log.open("a") as f:
            f.write("second line\n")
        time.sleep(0.3)
        client.cancel(job.id)

    threading.Thread(target=write_then_finish).start()
    assert "".join(client.logs(job.id, follow=True, timeout=20)) == "first line\nsecond line\n"


def test_history_groups_and_tokens_through_the_client(real_api):
    _, url, token = real_api
    client = Client(url, token)
    history = client.history(group_by="user")
    assert history.group_by == "user" and history.groups == () and history.totals.saving_g is None
    made = client.create_token("bob")
    assert made["role"] == "user" and Client(url, made["token"]).whoami()["user"] == "bob"
    assert {t["user"] for t in client.list_tokens()} == {"alice", "bob"}
    client.revoke_token(made["id"])
    with pytest.raises(Unauthorized):
        Client(url, made["token"]).whoami()

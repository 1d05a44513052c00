"""Python client for the wattsched daemon's REST API (v1): the ``Client``, its HTTP session, and how it finds the
local daemon.

::

    from scheduler.client import Client

    client = Client()  # WATTSCHED_URL, else the local daemon
    job = client.submit("diffusion-train", {"steps": 200}, deadline="2026-06-01T18:00:00Z")
    job = client.wait(job.id, timeout=3600)
    print(job.state, job.energy.energy_kwh, job.energy.methods)

Which daemon: ``url`` if given, else ``WATTSCHED_URL``, else the address the local daemon wrote to
``<data dir>/daemon.json``, else http://127.0.0.1:8765. The token likewise: ``token``, else ``WATTSCHED_TOKEN``,
else the token in daemon.json, which is only sent to the daemon that wrote it.

Every error this module raises is a ``ClientError`` (the tree is drawn in ``scheduler.client.errors``).

This module must import fast and stay light (no torch, ray, sqlalchemy or fastapi): it is what users import in
their notebooks and scripts.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import quote

import requests

from scheduler.client.errors import ApiError, ClientError, ConnectionFailed, WaitTimeout
from scheduler.client.models import History, Job, LogChunk
from scheduler.store.job_state import JobState

DEFAULT_HOST = "127.0.0.1"
"""Where the local daemon listens by default: loopback only."""
DEFAULT_PORT = 8765
"""Port of the local daemon's REST API by default."""
DEFAULT_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
"""The local daemon's address when neither WATTSCHED_URL nor daemon.json says otherwise."""

_GET_TRIES = 3  # GETs and submissions (idempotent by their key); other POSTs once: one that failed mid-way
# may have been applied
_RETRY_BACKOFF_S = 0.2  # then 0.4 s: enough for a blip or a port rebind; an outage should fail fast
# A 503 (the daemon is up but its database is away) is asked again, for the requests above, after the answer's
# Retry-After (at most _UNAVAILABLE_MAX_WAIT_S) or else a backoff doubling from _UNAVAILABLE_BACKOFF_S, while the
# waits add up to at most _UNAVAILABLE_PATIENCE_S: long enough for a database restart or a failover.
_UNAVAILABLE_BACKOFF_S = 0.5
_UNAVAILABLE_MAX_WAIT_S = 10.0
_UNAVAILABLE_PATIENCE_S = 30.0
_LONG_POLL_S = 30.0  # one /wait request; the API holds it at most 60 s
_LOG_POLL_S = 10.0  # one /logs request while following; the daemon answers as soon as there is more


def _local_daemon() -> dict[str, Any]:
    """What the local daemon wrote to ``<data dir>/daemon.json`` ({"url", "token"}), or {} if nothing."""
    data_dir = os.environ.get("WATTSCHED_DATA_DIR")
    if not data_dir:
        import platformdirs  # here, not at the top: only needed when nothing says where the daemon is

        data_dir = platformdirs.user_data_dir("wattsched")
    try:
        found = json.loads((Path(data_dir) / "daemon.json").read_text())
    except (OSError, ValueError):  # no daemon ran here, or it is rewriting the file: fall back to defaults
        return {}
    return found if isinstance(found, dict) else {}


def _iso(at: datetime | str | None) -> str | None:
    """An ISO 8601 UTC string for the API; a naive datetime is taken as local time, as Python does."""
    if at is None or isinstance(at, str):
        return at
    return at.astimezone(timezone.utc).isoformat()


def _retry_after_s(response: requests.Response, default_s: float) -> float:
    """Seconds to wait before asking again, as the answer's Retry-After says (in seconds; its other form, an HTTP
    date, and a missing one give ``default_s``), at most ``_UNAVAILABLE_MAX_WAIT_S``."""
    try:
        wait_s = float(response.headers.get("Retry-After", ""))
    except ValueError:
        wait_s = default_s
    if wait_s != wait_s:  # "nan" parses as a float too
        wait_s = default_s
    return min(max(wait_s, 0.0), _UNAVAILABLE_MAX_WAIT_S)


def _api_error(response: requests.Response) -> ApiError:
    status = response.status_code
    code, message, field_name = f"http_{status}", f"HTTP {status} {response.reason}", None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or code
        message = error.get("message") or message
        field_name = error.get("field")
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):
        message = body["detail"]  # FastAPI's own answer, e.g. a route this (older) daemon does not have
    return ApiError.for_status(status)(status, code, message, field_name)


class Client:
    """A connection to one wattsched daemon; one per thread (it keeps a connection pool).

    ``timeout_s`` bounds each HTTP request; ``wait`` adds its long-poll window on top.
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout_s: float = 30):
        local = _local_daemon() if url is None or token is None else {}
        self.url = (url or os.environ.get("WATTSCHED_URL") or local.get("url") or DEFAULT_URL).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ClientError(f"invalid daemon URL {self.url!r}: it must start with http:// or https://")
        if token is None:
            token = os.environ.get("WATTSCHED_TOKEN") or None
        if token is None and str(local.get("url", "")).rstrip("/") == self.url:
            token = local.get("token")  # never sent elsewhere: it is the local daemon's secret
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.headers["Accept"] = "application/json"
        self._session.headers["User-Agent"] = "wattsched-client"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    # --- jobs ---

    def submit(self, kind: str, spec: Mapping[str, Any], gpus: int = 1, deadline: datetime | str | None = None,
               zones: Sequence[str] | None = None, interruptible: bool = False, *,
               not_before: datetime | str | None = None, time_limit_s: float | None = None, priority: int = 0,
               hold: bool = False, depends_on: Sequence[str] | None = None,
               idempotency_key: str | None = None, gpus_per_node: int | None = None, launch: str | None = None,
               stop_signal: str | None = None, grace_s: float | None = None,
               memory_limit_gib: float | None = None) -> Job:
        """Queue a job of ``kind`` (``diffusion-train``, ``diffusion-sample``, ...) and return it as created.

        deadline: when it must be finished (datetime or ISO 8601); the scheduler may delay it until then to
        run on cleaner power. zones: grid zones it may run in (None: any). interruptible: it may be suspended
        at a checkpoint and resumed later. not_before: do not start before then. time_limit_s: wall-clock
        limit. priority: -1000..1000, higher first. hold: queue it held (``release`` lets it run).
        depends_on: ids of jobs that must succeed first. gpus_per_node: the gang's GPUs on each node (None: the
        fewest nodes that fit); launch: ``per-gpu`` (one process per GPU, default) or ``per-node``. stop_signal
        (default SIGTERM) and grace_s (default 120): how the job is asked to stop, and how long it has to
        checkpoint and exit before SIGKILL. memory_limit_gib: the memory each of its processes may allocate (a
        process refused more fails the job, "killed: memory limit"); None: no limit.

        Submitting is idempotent: the request carries ``idempotency_key`` (a fresh random one by default), so
        a retry after a connection error finds the job the first attempt created instead of making another.
        Pass your own key to make a re-run of your script idempotent too.
        """
        body: dict[str, Any] = {
            "kind": kind, "spec": dict(spec), "gpus": gpus, "deadline": _iso(deadline),
            "zones": None if zones is None else [zones] if isinstance(zones, str) else list(zones),
            "interruptible": interruptible,
        }
        # Only what was asked: an older daemon refuses fields it does not know.
        optional = {"not_before": _iso(not_before), "time_limit_s": time_limit_s, "priority": priority or None,
                    "hold": hold or None,
                    "depends_on": None if depends_on is None else [depends_on] if isinstance(depends_on, str)
                    else list(depends_on),
                    "gpus_per_node": gpus_per_node, "launch": launch, "stop_signal": stop_signal, "grace_s": grace_s,
                    "memory_limit_gib": memory_limit_gib}
        body.update({k: v for k, v in optional.items() if v is not None})
        key = idempotency_key or uuid.uuid4().hex
        return self._parse(Job, self._request("POST", "/v1/jobs", body=body, headers={"Idempotency-Key": key},
                                              retry=True))

    def get(self, job_id: str) -> Job:
        """The job as it is now."""
        return self._parse(Job, self._request("GET", f"/v1/jobs/{quote(str(job_id), safe='')}"))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is over (succeeded, failed or cancelled) and return it.

        timeout: seconds, None for no limit; past it, raises WaitTimeout (the job itself goes on).
        """
        path = f"/v1/jobs/{quote(str(job_id), safe='')}/wait"
        give_up_at = None if timeout is None else time.monotonic() + timeout
        while True:
            window_s = _LONG_POLL_S
            if give_up_at is not None:
                window_s = max(0.0, min(window_s, give_up_at - time.monotonic()))
            job = self._parse(Job, self._request("GET", path, params={"timeout_s": round(window_s, 3)},
                                                 timeout_s=window_s + self.timeout_s))
            if job.terminal:
                return job
            if give_up_at is not None and time.monotonic() >= give_up_at:
                raise WaitTimeout(job, timeout)

    def hold(self, job_id: str) -> Job:
        """Keep a waiting job from starting (it stays queued, with reason "held by the user")."""
        return self._parse(Job, self._request("POST", f"/v1/jobs/{quote(str(job_id), safe='')}/hold"))

    def release(self, job_id: str) -> Job:
        """Let a held job be scheduled again."""
        return self._parse(Job, self._request("POST", f"/v1/jobs/{quote(str(job_id), safe='')}/release"))

    def log_chunk(self, job_id: str, offset: int = 0, stream: str = "stderr", wait_s: float = 0.0) -> LogChunk:
        """One chunk of a job's log (``stderr`` or ``events``) from byte ``offset``; with ``wait_s``, the daemon
        waits that long for more when there is none yet."""
        answer = self._request("GET", f"/v1/jobs/{quote(str(job_id), safe='')}/logs",
                               params={"offset": offset, "stream": stream, "wait_s": wait_s},
                               timeout_s=wait_s + self.timeout_s)
        return self._parse(LogChunk, answer)

    def logs(self, job_id: str, follow: bool = False, stream: str = "stderr", offset: int = 0,
             timeout: float | None = None) -> Iterator[str]:
        """The job's log as text chunks: what there is now, or with ``follow`` everything until the job is over
        (or ``timeout`` seconds pass). ``stream``: ``stderr`` (the job's stderr.log) or ``events``
        (events.jsonl: progress, results)."""
        give_up_at = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_s = 0.0
            if follow:
                wait_s = _LOG_POLL_S if give_up_at is None else max(0.0, min(_LOG_POLL_S,
                                                                             give_up_at - time.monotonic()))
            chunk = self.log_chunk(job_id, offset, stream, round(wait_s, 3))
            if chunk.text:
                yield chunk.text
            offset = chunk.next_offset
            if chunk.complete or (not follow and not chunk.text):
                return
            if give_up_at is not None and time.monotonic() >= give_up_at:
                return

    def cancel(self, job_id: str) -> Job:
        """Cancel a job. A waiting job is cancelled at once; a running one keeps state ``running`` with
        ``cancel_requested`` until its worker stops it. Cancelling a finished job raises Conflict."""
        return self._parse(Job, self._request("POST", f"/v1/jobs/{quote(str(job_id), safe='')}/cancel"))

    def delete(self, job_id: str) -> bool:
        """Delete a job that has ended, with its runs, energy and outputs (admins: any job; users: their own).
        Returns whether its directory was removed too. A job that has not ended, or that a job still waiting or
        running needs, raises Conflict."""
        answer = self._request("DELETE", f"/v1/jobs/{quote(str(job_id), safe='')}")
        return bool(self._field(answer, "outputs_removed"))

    def list(self, state: JobState | str | None = None, kind: str | None = None, limit: int = 100,
             offset: int = 0, *, user: str | None = None, zone: str | None = None,
             since: datetime | str | None = None, until: datetime | str | None = None) -> list[Job]:
        """Jobs newest first, optionally only those in ``state``, of ``kind``, of ``user`` (admins), that ran in
        ``zone``, or submitted in [since, until)."""
        state = state.value if isinstance(state, JobState) else state
        params = {"state": state, "kind": kind, "limit": limit, "offset": offset}
        params.update({k: v for k, v in (("user", user), ("zone", zone), ("since", _iso(since)),
                                         ("until", _iso(until))) if v is not None})
        answer = self._request("GET", "/v1/jobs", params=params)
        return [self._parse(Job, j) for j in self._field(answer, "jobs")]

    def history(self, since: datetime | str | None = None, until: datetime | str | None = None,
                kind: str | None = None, *, state: str | None = None, user: str | None = None,
                zone: str | None = None, group_by: str | None = None) -> History:
        """Energy and emissions of the jobs that started in [since, until), with totals; ``group_by`` (user,
        kind, zone, day, state) adds per-group sums, including the saving against the fifo counterfactual."""
        params = {"since": _iso(since), "until": _iso(until), "kind": kind}
        params.update({k: v for k, v in (("state", state), ("user", user), ("zone", zone),
                                         ("group_by", group_by)) if v is not None})
        return self._parse(History, self._request("GET", "/v1/history", params=params))

    def whoami(self) -> dict[str, Any]:
        """The user and role behind this client's token."""
        return self._request("GET", "/v1/whoami")

    # --- tokens (admins) ---

    def create_token(self, user: str, role: str | None = None, name: str = "") -> dict[str, Any]:
        """A new token for ``user`` (created if new); the answer's ``token`` is the secret, shown only now."""
        return self._request("POST", "/v1/tokens", body={"user": user, "role": role, "name": name})

    def list_tokens(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        return self._field(self._request("GET", "/v1/tokens", params={"include_revoked": include_revoked}),
                           "tokens")

    def revoke_token(self, token_id: int) -> None:
        self._request("DELETE", f"/v1/tokens/{int(token_id)}")

    def status(self) -> dict[str, Any]:
        """The daemon's version, policy, database, GPUs (and what each runs) and queue counts."""
        return self._request("GET", "/v1/status")

    def carbon(self, zone: str | None = None, duration_s: float | None = None) -> list[dict[str, Any]]:
        """Each zone's (or one zone's) current intensity, signal health, 48 h forecast and, given a job length,
        its cleanest window."""
        params = {k: v for k, v in (("zone", zone), ("duration_s", duration_s)) if v is not None}
        return self._request("GET", "/v1/carbon", params=params)["zones"]

    # --- HTTP ---

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 body: dict[str, Any] | None = None, timeout_s: float | None = None,
                 headers: dict[str, str] | None = None, retry: bool = False) -> Any:
        """The decoded JSON answer, or the ClientError that says what went wrong.

        GETs, and requests marked ``retry`` (idempotent ones), are tried again on connection errors, and on 503
        answers (the daemon's database is away) for as long as their Retry-After says, within a bound.
        """
        retryable = method == "GET" or retry
        tries = _GET_TRIES if retryable else 1
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        attempt, unavailable, waited_s = 0, 0, 0.0
        while True:
            try:
                response = self._session.request(method, self.url + path, params=params, json=body,
                                                 timeout=timeout_s, headers=headers)
            except requests.ConnectionError as exc:  # refused, reset or connect timeout: worth another try
                attempt += 1
                if attempt == tries:
                    raise self._connection_failed(exc, timeout_s) from exc
                time.sleep(_RETRY_BACKOFF_S * 2 ** (attempt - 1))
                continue
            except requests.Timeout as exc:  # it accepted the request but is stuck: asking again would not help
                raise self._connection_failed(exc, timeout_s) from exc
            except requests.RequestException as exc:
                raise ClientError(f"request to {self.url} failed: {exc}") from exc
            if response.status_code != 503 or not retryable:
                break
            wait_s = _retry_after_s(response, _UNAVAILABLE_BACKOFF_S * 2**unavailable)
            if waited_s + wait_s > _UNAVAILABLE_PATIENCE_S:
                break  # raise the 503: it says what is away
            time.sleep(wait_s)
            unavailable, waited_s = unavailable + 1, waited_s + wait_s
        if response.status_code >= 400:
            raise _api_error(response)
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"{self.url} answered {method} {path} with something other than JSON; "
                              "is it a wattsched daemon?") from None

    def _connection_failed(self, exc: requests.RequestException, timeout_s: float) -> ConnectionFailed:
        if isinstance(exc, requests.ReadTimeout):  # it is up (it accepted us) but busy or stuck
            return ConnectionFailed(self.url, f"the wattsched daemon at {self.url} did not answer within "
                                              f"{timeout_s:g} s")
        return ConnectionFailed(self.url, f"cannot reach the wattsched daemon at {self.url}: is the daemon "
                                          "running? start it with `wattsched daemon`, or set WATTSCHED_URL")

    def _parse(self, cls, data: Any):
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ClientError(f"unexpected answer from {self.url} ({type(exc).__name__}: {exc}); "
                              "are the client and the daemon the same version?") from exc

    def _field(self, answer: Any, name: str) -> Any:
        if not isinstance(answer, dict) or name not in answer:
            raise ClientError(f"unexpected answer from {self.url}: no {name!r}; "
                              "are the client and the daemon the same version?")
        return answer[name]

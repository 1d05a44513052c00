"""The daemon's REST API (v1), described at /v1/openapi.json. Every bad request gets a 4xx naming the field.

Authentication: ``Authorization: Bearer <token>`` (see scheduler/auth.py). A user sees and changes only their
own jobs; another user's job answers 404, as a job that does not exist, so ids do not leak. Admins see all,
and manage tokens. Errors have one shape: ``{"error": {"code", "message", "field"}}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.api.command_access import KIND as COMMAND_KIND
from scheduler.api.command_access import check_command_access, listens_on_loopback
from scheduler.api.responses import SafeJSONResponse
from scheduler.api.service import SchedulerService
from scheduler.store.auth import Principal
from scheduler.errors import (DatabaseUnavailable, Forbidden, InvalidRequest, InvalidTransition, JobNotFound,
                              KeyReused, TooLarge, Unauthenticated, WattschedError)
from scheduler.store.exports import GROUP_BY
from scheduler.store.job_state import JobState
from scheduler.store.paths import PathRoots
from scheduler.store.views import history_view, job_view, shows_paths
from workers.kinds import builtin_kinds

log = logging.getLogger(__name__)
MAX_WAIT_S = 60.0
MAX_LIST_LIMIT = 1000
MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted (a job spec is a few hundred bytes); larger ones get 413."""
MAX_PARAM_CHARS = 200
MAX_LOG_CHUNK = 1024 * 1024
LOG_STREAMS = {"stderr": "stderr.log", "events": "events.jsonl"}
LOG_POLL_S = 0.2
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PUBLIC_PATHS = frozenset({"/v1/openapi.json"})


# --- the error shape and what the description says ----------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code: bad_request, invalid_spec, unauthorized, "
                                  "forbidden, not_found, conflict, too_large, unavailable, database_unavailable, "
                                  "internal")
    message: str = Field(description="one line for people, naming the field and what it accepts")
    field: str | None = Field(description="the field at fault (spec.steps, deadline, limit), or null")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class SubmitBody(BaseModel):
    """A job submission (what POST /v1/jobs accepts)."""

    kind: str = Field(description="job kind: " + ", ".join(builtin_kinds().names()))
    spec: dict[str, Any] = Field(default_factory=dict, description="the kind's parameters")
    gpus: int = Field(1, ge=1, le=64)
    deadline: str | None = Field(None, description="ISO 8601 with timezone; must be in the future")
    zones: list[str] | None = Field(None, description="grid zones it may run in; null: any")
    interruptible: bool = False
    not_before: str | None = Field(None, description="ISO 8601 with timezone: do not start before")
    time_limit_s: float | None = Field(None, gt=0, description="wall-clock limit in seconds")
    priority: int = Field(0, ge=-1000, le=1000)
    hold: bool = Field(False, description="submit held: it waits until released")
    depends_on: list[str] | None = Field(None, description="ids of jobs that must succeed first")
    idempotency_key: str | None = Field(None, max_length=200, description="or the Idempotency-Key header")
    gpus_per_node: int | None = Field(None, ge=1, le=64, description="GPUs on each node of the gang; null: the "
                                      "fewest nodes that fit")
    launch: str | None = Field(None, description="per-gpu (one process per GPU, torchrun's environment; default) "
                               "or per-node (one process per node)")
    stop_signal: str | None = Field(None, description="signal that asks the job to stop (default SIGTERM)")
    grace_s: float | None = Field(None, ge=0, le=3600, description="seconds from the stop signal to SIGKILL "
                                  "(default 120)")
    memory_limit_gib: float | None = Field(None, description="memory each of the job's processes may allocate "
                                           "(GiB); null: no limit")


#: What a submission may carry: the body's fields (others are refused, naming them).
SUBMIT_FIELDS = frozenset(SubmitBody.model_fields)


class TokenBody(BaseModel):
    user: str
    role: str | None = Field(None, description="admin or user (default user)")
    name: str = ""


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413)}


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return SafeJSONResponse(status_code=status,
                            content={"error": {"code": code, "message": message[:1000], "field": field}})


# --- parsing parameters --------------------------------------------------------------------------------


def _parse_time(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidRequest(f"{field}: must be an ISO 8601 time string", field)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{field}: {value[:60]!r} is not an ISO 8601 time", field) from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{field}: must include a timezone (e.g. 2026-01-01T12:00:00Z)", field)
    try:
        utc = parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not 1970 <= utc.year <= 9000:
        raise InvalidRequest(f"{field}: must be a time between 1970 and 9000", field)
    return utc


def _int_param(value: str | None, field: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"{field}: must be an integer from {low} to {high}", field) from None
    if not low <= number <= high:
        raise InvalidRequest(f"{field}: must be an integer from {low} to {high}", field)
    return number


def _text_param(value: str | None, field: str) -> str | None:
    """A free-text filter: printable, bounded (a NUL would upset PostgreSQL)."""
    if value is None or value == "":
        return None
    if len(value) > MAX_PARAM_CHARS or not value.isprintable():
        raise InvalidRequest(f"{field}: must be printable text of at most {MAX_PARAM_CHARS} characters", field)
    return value


def _checked_job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFound(job_id[:64])
    return job_id


async def _read_body(request: Request) -> dict[str, Any]:
    """The JSON object in the body, read up to MAX_BODY_BYTES (413 past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise TooLarge()
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("body: a JSON object is required", "body")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"body: not valid JSON ({str(exc)[:100]})", "body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", "body")
    return body


# --- the app -------------------------------------------------------------------------------------------


def create_app(daemon: SchedulerService) -> FastAPI:
    """The API over a scheduler service (``scheduler.api.service``; the daemon is one); blocking calls run in
    FastAPI's thread pool."""
    app = FastAPI(title="wattsched", version="1", docs_url="/v1/docs", redoc_url=None,
                  openapi_url="/v1/openapi.json", default_response_class=SafeJSONResponse,
                  description="Energy- and carbon-aware scheduling of GPU jobs. Authenticate with a bearer token.")
    bearer = HTTPBearer(auto_error=False, description="a wattsched API token (wattsched token create)")
    # Submissions use at most as many threads as the pool keeps connections: beyond that the pool would open
    # (and close) an extra database connection per request, which costs more than waiting for a pooled one.
    # A thread semaphore, not an anyio limiter: that one binds to the event loop it is first used on.
    db_slots = threading.BoundedSemaphore(max(2, daemon.db_pool_size()))
    path_roots = PathRoots.for_daemon(daemon.settings, listens_on_loopback(daemon.settings.host))

    def view(job, who: Principal) -> dict[str, Any]:
        return job_view(job, shows_paths(job, who.user_id, who.is_admin))

    async def principal(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        secret = credentials.credentials if credentials is not None else None
        if not secret:
            raise Unauthenticated()
        found = daemon.auth.peek(secret)
        if found is False:  # not in the cache: ask the database, off the event loop
            found = await run_in_threadpool(daemon.auth.authenticate, secret)
        if found is None:
            raise Unauthenticated()
        return found

    def admin(who: Principal = Depends(principal)) -> Principal:
        if not who.is_admin:
            raise Forbidden("only admins manage tokens")
        return who

    # --- errors ---

    @app.exception_handler(InvalidRequest)
    async def _invalid(_request, exc: InvalidRequest):
        code = "invalid_spec" if (exc.field or "").startswith("spec") else "bad_request"
        return _error(400, code, str(exc), exc.field)

    @app.exception_handler(JobNotFound)
    async def _not_found(_request, exc: JobNotFound):
        return _error(404, "not_found", str(exc), "job_id")

    @app.exception_handler(InvalidTransition)
    async def _conflict(_request, exc: InvalidTransition):
        return _error(409, "conflict", str(exc))

    @app.exception_handler(KeyReused)
    async def _key_reused(_request, exc: KeyReused):
        return _error(409, "idempotency_key_reused", str(exc), "idempotency_key")

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(_request, _exc):
        return JSONResponse(status_code=401, headers={"WWW-Authenticate": "Bearer"}, content={"error": {
            "code": "unauthorized", "field": None,
            "message": "missing, wrong or revoked bearer token; a local daemon writes one to daemon.json in the "
                       "data directory, an admin makes one with `wattsched token create`"}})

    @app.exception_handler(Forbidden)
    async def _forbidden(_request, exc: Forbidden):
        return _error(403, "forbidden", str(exc), exc.field)

    @app.exception_handler(TooLarge)
    async def _too_large(_request, _exc):
        return _error(413, "too_large", f"body: request body larger than {MAX_BODY_BYTES} bytes; a job spec "
                                        "should be small (point to data by path instead)", "body")

    @app.exception_handler(WattschedError)
    async def _scheduler_error(_request, exc: WattschedError):
        return _error(503, "unavailable", str(exc))

    @app.exception_handler(DatabaseUnavailable)
    async def _database_unavailable(_request, exc: DatabaseUnavailable):
        # Not the driver's words: they name the database's host and port, which users need not know.
        retry_after_s = max(1, math.ceil(exc.retry_after_s))
        response = _error(503, "database_unavailable", f"the scheduler's database is unavailable (refusing "
                          f"connections or not answering in time); try again in {retry_after_s} s")
        response.headers["Retry-After"] = str(retry_after_s)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        # A bug, not the user's doing: logged with its traceback here, answered in the API's error shape (never
        # Starlette's plain-text 500, which clients cannot parse) without the details, which may hold paths.
        log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "the daemon failed to answer this request (a bug: its log has the "
                                             "details)")

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(400, "bad_request", f"{field or 'request'}: {first.get('msg', 'invalid')}", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return _error(exc.status_code, code, str(exc.detail))

    try:
        from sqlalchemy.exc import DataError
    except ImportError:  # pragma: no cover
        DataError = None
    if DataError is not None:
        @app.exception_handler(DataError)
        async def _data_error(_request, exc):
            return _error(400, "bad_request", "a value is out of the range the database accepts")

    # --- jobs ---

    @app.post("/v1/jobs", status_code=201, responses=ERRORS, openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": SubmitBody.model_json_schema()}}}},
        summary="Submit a job (idempotent with a key: the same key returns the job it created, 200)")
    async def submit(request: Request, who: Principal = Depends(principal)) -> Any:
        body = await _read_body(request)
        unknown = sorted(set(body) - SUBMIT_FIELDS)
        if unknown:
            name = unknown[0][:60]
            raise InvalidRequest(f"{name}: unknown field; accepted: {', '.join(sorted(SUBMIT_FIELDS))}", name)
        if body.get("kind") == COMMAND_KIND:  # the user's own code, run as the workers' OS user
            check_command_access(daemon.settings.command_jobs, daemon.settings.host, who.is_admin)
        header_key = request.headers.get("idempotency-key")
        key = body.get("idempotency_key")
        if header_key is not None:
            if key is not None and key != header_key:
                raise InvalidRequest("idempotency_key: differs from the Idempotency-Key header", "idempotency_key")
            key = header_key

        def run():
            with db_slots:  # validation may read the database (a dependency, a job a spec refers to)
                submission = validate()
            # Outside the slots: a submission waiting for the transaction its batch shares (the store's group
            # commit) holds no connection, and the more wait together, the fewer transactions.
            job, created = daemon.submit_once(submission, who.user_id)
            shown = job_view(job)  # its submitter's: with its paths
            shown["user"] = shown["user"] or who.user  # a new job's user is not read back: it is the submitter
            return shown, created

        def validate():
            return daemon.store.validate(
                body.get("kind"), body.get("spec", {}), body.get("gpus", 1),
                _parse_time(body.get("deadline"), "deadline"), body.get("zones"), body.get("interruptible", False),
                not_before=_parse_time(body.get("not_before"), "not_before"),
                time_limit_s=body.get("time_limit_s"), priority=body.get("priority", 0),
                hold=body.get("hold", False), depends_on=body.get("depends_on"), idempotency_key=key,
                gpus_per_node=body.get("gpus_per_node"), launch=body.get("launch"),
                stop_signal=body.get("stop_signal"), grace_s=body.get("grace_s"),
                memory_limit_gib=body.get("memory_limit_gib"), owner=who.owner_filter(),
                paths=path_roots)

        shown, created = await run_in_threadpool(run)
        return SafeJSONResponse(shown, status_code=201 if created else 200)

    @app.get("/v1/jobs", responses=ERRORS, summary="Jobs newest first, filtered, paginated (limit/offset, total)")
    def list_jobs(state: str | None = None, kind: str | None = None, user: str | None = None,
                  zone: str | None = None, since: str | None = None, until: str | None = None,
                  limit: str | None = None, offset: str | None = None,
                  who: Principal = Depends(principal)) -> dict[str, Any]:
        user = _own_user_filter(who, _text_param(user, "user"))
        limit_n = _int_param(limit, "limit", 100, 1, MAX_LIST_LIMIT)
        offset_n = _int_param(offset, "offset", 0, 0, 10**9)
        jobs, total = daemon.store.list(
            _text_param(state, "state"), _text_param(kind, "kind"), limit_n, offset_n, owner=who.owner_filter(),
            user=user, zone=_text_param(zone, "zone"), since=_parse_time(since, "since"),
            until=_parse_time(until, "until"))
        return {"jobs": [view(j, who) for j in jobs], "total": total, "limit": limit_n, "offset": offset_n}

    @app.get("/v1/jobs/{job_id}", responses=ERRORS, summary="One job with its runs, energy and reason")
    def get_job(job_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        return view(daemon.store.get(_checked_job_id(job_id), owner=who.owner_filter()), who)

    @app.post("/v1/jobs/{job_id}/cancel", responses=ERRORS, summary="Cancel a job (a running one stops shortly)")
    def cancel(job_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        return view(daemon.cancel(_checked_job_id(job_id), owner=who.owner_filter()), who)

    @app.post("/v1/jobs/{job_id}/hold", responses=ERRORS, summary="Keep a waiting job from starting")
    def hold(job_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        return view(daemon.hold(_checked_job_id(job_id), owner=who.owner_filter()), who)

    @app.post("/v1/jobs/{job_id}/release", responses=ERRORS, summary="Let a held job be scheduled")
    def release(job_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        return view(daemon.release(_checked_job_id(job_id), owner=who.owner_filter()), who)

    @app.get("/v1/jobs/{job_id}/wait", responses=ERRORS, summary="Long poll: the job once over, or after timeout_s")
    async def wait(job_id: str, timeout_s: float = 30.0, who: Principal = Depends(principal)) -> dict[str, Any]:
        if not 0 <= timeout_s <= MAX_WAIT_S:
            raise InvalidRequest(f"timeout_s: must be from 0 to {MAX_WAIT_S:g}", "timeout_s")
        job_id = _checked_job_id(job_id)
        await run_in_threadpool(daemon.store.check_owner, job_id, who.owner_filter())
        job = await asyncio.to_thread(daemon.wait_for, job_id, timeout_s)
        return view(job, who)

    @app.get("/v1/jobs/{job_id}/logs", responses=ERRORS,
             summary="A chunk of the job's stderr.log or events.jsonl from a byte offset, and the next offset")
    async def logs(job_id: str, stream: str = "stderr", offset: int = 0, max_bytes: int = 65536,
                   wait_s: float = 0.0, who: Principal = Depends(principal)) -> dict[str, Any]:
        if stream not in LOG_STREAMS:
            raise InvalidRequest(f"stream: must be one of {', '.join(LOG_STREAMS)}", "stream")
        if not 0 <= offset <= 2**50:
            raise InvalidRequest("offset: must be a byte offset from 0", "offset")
        if not 1 <= max_bytes <= MAX_LOG_CHUNK:
            raise InvalidRequest(f"max_bytes: must be from 1 to {MAX_LOG_CHUNK}", "max_bytes")
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise InvalidRequest(f"wait_s: must be from 0 to {MAX_WAIT_S:g}", "wait_s")
        job_id = _checked_job_id(job_id)
        job = await run_in_threadpool(daemon.store.get, job_id, who.owner_filter())
        path = Path(job.workdir) / LOG_STREAMS[stream]
        give_up_at = time.monotonic() + wait_s
        terminal = JobState(job.state).terminal
        while True:
            data = await run_in_threadpool(_read_chunk, path, offset, max_bytes)
            if data or terminal or time.monotonic() >= give_up_at:
                break
            await asyncio.sleep(LOG_POLL_S)
            job = await run_in_threadpool(daemon.store.get, job_id, who.owner_filter())
            terminal = JobState(job.state).terminal
        text, used = _decode(data)
        size = await run_in_threadpool(_size, path)
        return {"job_id": job_id, "stream": stream, "offset": offset, "next_offset": offset + used, "text": text,
                "state": job.state, "complete": terminal and offset + used >= size}

    @app.delete("/v1/jobs/{job_id}", responses=ERRORS,
                summary="Delete a job that has ended, with its runs, energy and outputs (users: their own)")
    def delete_job(job_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        removed = daemon.store.delete(_checked_job_id(job_id), owner=who.owner_filter())
        return {"id": job_id, "deleted": True, "outputs_removed": removed}

    # --- history, carbon, status ---

    @app.get("/v1/history", responses=ERRORS,
             summary="Energy and emissions per job (and per group), with totals and savings against fifo")
    def history(since: str | None = None, until: str | None = None, kind: str | None = None,
                state: str | None = None, user: str | None = None, zone: str | None = None,
                group_by: str | None = None, who: Principal = Depends(principal)) -> dict[str, Any]:
        if group_by is not None and group_by not in GROUP_BY:
            raise InvalidRequest(f"group_by: must be one of {', '.join(GROUP_BY)}", "group_by")
        user = _own_user_filter(who, _text_param(user, "user"))
        jobs = daemon.store.history(_parse_time(since, "since"), _parse_time(until, "until"),
                                    _text_param(kind, "kind"), state=_text_param(state, "state"),
                                    owner=who.owner_filter(), user=user, zone=_text_param(zone, "zone"))
        return history_view(jobs, group_by)

    @app.get("/v1/carbon", responses=ERRORS, summary="Carbon intensity per zone, its health and forecast")
    def carbon(zone: str | None = None, duration_s: float | None = None, horizon_s: float = 48 * 3600.0,
               who: Principal = Depends(principal)) -> dict[str, Any]:
        if duration_s is not None and not 0 < duration_s <= 7 * 86400:
            raise InvalidRequest("duration_s: must be a number of seconds from 1 to 604800 (7 days)", "duration_s")
        if not 0 < horizon_s <= 7 * 86400:
            raise InvalidRequest("horizon_s: must be a number of seconds from 1 to 604800 (7 days)", "horizon_s")
        return {"zones": daemon.carbon(_text_param(zone, "zone"), duration_s, horizon_s)}

    @app.get("/v1/status", responses=ERRORS, summary="Version, policy, database, GPUs, queue, carbon health")
    def status(who: Principal = Depends(principal)) -> dict[str, Any]:
        from importlib.metadata import version

        status = daemon.status()
        if not who.is_admin:  # another user's job id on a busy GPU would leak: show only that it is busy
            busy = [g["busy_job"] for g in status.get("gpus", []) if g.get("busy_job")]
            own = set(daemon.store.owned(busy, who.user_id)) if busy else set()
            status["gpus"] = [dict(g, busy_job=g["busy_job"] if not g.get("busy_job") or g["busy_job"] in own
                                   else "another user's job") for g in status.get("gpus", [])]
        return {"version": version("wattsched"), **status, "you": {"user": who.user, "role": who.role}}

    @app.get("/v1/whoami", responses=ERRORS, summary="The user and role behind the token")
    def whoami(who: Principal = Depends(principal)) -> dict[str, Any]:
        return {"user": who.user, "role": who.role, "token_id": who.token_id}

    # --- tokens (admins) ---

    @app.get("/v1/tokens", responses=ERRORS, summary="Active tokens (never their secrets); admins only")
    def list_tokens(include_revoked: bool = False, who: Principal = Depends(admin)) -> dict[str, Any]:
        return {"tokens": daemon.auth.list_tokens(include_revoked)}

    @app.post("/v1/tokens", status_code=201, responses=ERRORS, openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": TokenBody.model_json_schema()}}}},
        summary="Create a token (and its user if new); the secret is in this answer only; admins only")
    async def create_token(request: Request, who: Principal = Depends(admin)) -> dict[str, Any]:
        body = await _read_body(request)
        unknown = sorted(set(body) - {"user", "role", "name"})
        if unknown:
            raise InvalidRequest(f"{unknown[0][:60]}: unknown field; accepted: name, role, user", unknown[0][:60])
        created = await run_in_threadpool(daemon.auth.create_token, body.get("user"), body.get("role"),
                                          body.get("name") or "")
        return {"id": created.id, "user": created.user, "role": created.role, "name": created.name,
                "token": created.secret}

    @app.delete("/v1/tokens/{token_id}", responses=ERRORS, summary="Revoke a token; admins only")
    def revoke_token(token_id: int, who: Principal = Depends(admin)) -> dict[str, Any]:
        if not 0 < token_id < 2**62 or not daemon.auth.revoke(token_id):
            return _error(404, "not_found", f"no active token with id {token_id}", "token_id")
        return {"id": token_id, "revoked": True}

    # --- Prometheus ---

    from scheduler.api.metrics import CONTENT_TYPE, DaemonMetrics

    daemon_metrics = DaemonMetrics(daemon)

    @app.get("/metrics", include_in_schema=False)
    def metrics(who: Principal = Depends(principal)) -> Response:
        """Prometheus text exposition (scrape with a bearer token: Prometheus' ``authorization`` setting)."""
        return Response(daemon_metrics.render(), media_type=CONTENT_TYPE)

    return app


def _own_user_filter(who: Principal, user: str | None) -> str | None:
    """A user may filter by their own name only; admins by anyone's."""
    if user is not None and not who.is_admin and user != who.user:
        raise Forbidden("user: only admins can see other users' jobs", "user")
    return user


def _read_chunk(path: Path, offset: int, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as f:
            if offset >= os.fstat(f.fileno()).st_size:
                return b""  # past the end: seeking there may fail (EINVAL) on file systems with smaller limits
            f.seek(offset)
            return f.read(max_bytes)
    except FileNotFoundError:
        return b""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _decode(data: bytes) -> tuple[str, int]:
    """Text of a chunk and how many bytes it used: a UTF-8 character cut at the end waits for the next chunk."""
    for cut in range(0, min(4, len(data)) + 1):
        try:
            return data[:len(data) - cut].decode("utf-8"), len(data) - cut
        except UnicodeDecodeError as exc:
            if exc.start < len(data) - 4:  # broken in the middle, not cut at the end: replace and move on
                break
    return data.decode("utf-8", errors="replace"), len(data)

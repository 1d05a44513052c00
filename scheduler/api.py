"""The daemon's REST API (v1). Every bad request gets a 4xx naming the field; see scheduler/client.py."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from scheduler.errors import InvalidRequest, InvalidTransition, JobNotFound, WattschedError
from scheduler.views import history_view, job_view

MAX_WAIT_S = 60.0
MAX_LIST_LIMIT = 1000
SUBMIT_FIELDS = frozenset({"kind", "spec", "gpus", "deadline", "zones", "interruptible"})


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message, "field": field}})


def _parse_time(value: Any, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: must be an ISO 8601 time string", field)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{field}: {value[:60]!r} is not an ISO 8601 time", field) from None
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{field}: must include a timezone (e.g. 2026-01-01T12:00:00Z)", field)
    return parsed


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


def create_app(daemon) -> FastAPI:
    """The API of one daemon (``scheduler.daemon.Daemon``); blocking calls run in FastAPI's thread pool."""
    app = FastAPI(title="wattsched", version="1", docs_url=None, redoc_url=None)

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

    @app.exception_handler(WattschedError)
    async def _scheduler_error(_request, exc: WattschedError):
        return _error(503, "unavailable", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(400, "bad_request", f"{field or 'request'}: {first.get('msg', 'invalid')}", field)

    @app.middleware("http")
    async def _authenticate(request: Request, call_next):
        if daemon.token is not None and request.headers.get("authorization") != f"Bearer {daemon.token}":
            return _error(401, "unauthorized", "missing or wrong bearer token; see daemon.json in the data directory")
        return await call_next(request)

    @app.post("/v1/jobs", status_code=201)
    def submit(body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - SUBMIT_FIELDS)
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: unknown field; accepted: {', '.join(sorted(SUBMIT_FIELDS))}",
                                 unknown[0])
        submission = daemon.store.validate(
            body.get("kind"), body.get("spec", {}), body.get("gpus", 1), _parse_time(body.get("deadline"), "deadline"),
            body.get("zones"), body.get("interruptible", False))
        return job_view(daemon.submit(submission))

    @app.get("/v1/jobs")
    def list_jobs(state: str | None = None, kind: str | None = None, limit: str | None = None,
                  offset: str | None = None) -> dict[str, Any]:
        jobs, total = daemon.store.list(state, kind, _int_param(limit, "limit", 100, 1, MAX_LIST_LIMIT),
                                        _int_param(offset, "offset", 0, 0, 10**9))
        return {"jobs": [job_view(j) for j in jobs], "total": total}

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str) -> dict[str, Any]:
        return job_view(daemon.store.get(job_id))

    @app.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        return job_view(daemon.cancel(job_id))

    @app.get("/v1/jobs/{job_id}/wait")
    async def wait(job_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        if not 0 <= timeout_s <= MAX_WAIT_S:
            raise InvalidRequest(f"timeout_s: must be from 0 to {MAX_WAIT_S:g}", "timeout_s")
        job = await asyncio.to_thread(daemon.wait_for, job_id, timeout_s)
        return job_view(job)

    @app.get("/v1/history")
    def history(since: str | None = None, until: str | None = None, kind: str | None = None) -> dict[str, Any]:
        return history_view(daemon.store.history(_parse_time(since, "since"), _parse_time(until, "until"), kind))

    @app.get("/v1/carbon")
    def carbon(zone: str | None = None, duration_s: float | None = None,
               horizon_s: float = 48 * 3600.0) -> dict[str, Any]:
        if duration_s is not None and not 0 < duration_s <= 7 * 86400:
            raise InvalidRequest("duration_s: must be a number of seconds from 1 to 604800 (7 days)", "duration_s")
        if not 0 < horizon_s <= 7 * 86400:
            raise InvalidRequest("horizon_s: must be a number of seconds from 1 to 604800 (7 days)", "horizon_s")
        return {"zones": daemon.carbon(zone, duration_s, horizon_s)}

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        from importlib.metadata import version

        return {"version": version("wattsched"), **daemon.status()}

    return app

"""The ``wattsched`` command: submit, inspect and cancel jobs, query their energy, run the daemon or the demo.

::

    wattsched submit diffusion-train --spec '{"steps": 200}' --set batch_size=64 --deadline +6h --zone DE
    wattsched list --state pending
    wattsched status JOB_ID
    wattsched history --since 7d --format csv > energy.csv

Errors print one line (``wattsched: error: ...``) and exit 1; usage errors exit 2. The daemon, database and
demo commands import their modules (ray, sqlalchemy, fastapi, torch) only when they run, so ``wattsched --help``
and the client commands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from scheduler import tables
from scheduler.client import DEFAULT_HOST, DEFAULT_PORT, Client, ClientError, Job, Unauthorized
from scheduler.errors import WattschedError
from scheduler.job_state import JobState

# Errors a user can act on, shown as one line; anything else is a bug and keeps its traceback.
_USER_ERRORS = (ClientError, WattschedError, ValueError)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --- parsing what users type ----------------------------------------------------------------------------


def parse_when(text: str, *, past: bool = False, now: datetime | None = None) -> datetime:
    """A UTC time from ISO 8601 or from a duration relative to ``now``.

    ``+2h`` is two hours from now, ``-2h`` two hours ago; a bare ``2h`` is in the future unless ``past`` (so
    ``history --since 7d`` means the last seven days). Units s, m, h, d, w combine: ``1d12h``. An ISO time
    without an offset is local time.
    """
    now = now or datetime.now(timezone.utc)
    text = text.strip()
    if text == "now":
        return now
    sign, body = (text[0], text[1:]) if text[:1] in ("+", "-") else ("", text)
    if _DURATIONS.fullmatch(body):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(body))
        ago = sign == "-" or (past and sign != "+")
        return now + timedelta(seconds=-seconds if ago else seconds)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time (2026-06-01T18:00Z) nor a duration "
                         "(+2h, 30m, 1d12h)") from None
    return at.astimezone(timezone.utc)  # a naive time is taken as local time here


def parse_spec(text: str | None, assignments: Sequence[str] = ()) -> dict[str, Any]:
    """A job spec from JSON, or from ``@path`` to a JSON file (``@-``: stdin), then ``key=value`` overrides.

    A dotted key sets a nested field (``model.channels=64``); a value is JSON if it parses (``100``, ``true``,
    ``[1, 2]``), else a string.
    """
    spec: Any = {}
    if text is not None:
        if text.startswith("@"):
            path = text[1:]
            try:
                text = sys.stdin.read() if path == "-" else Path(path).read_text()
            except OSError as exc:
                raise ValueError(f"--spec: cannot read {path}: {exc.strerror}") from None
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--spec is not valid JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise ValueError("--spec must be a JSON object, like '{\"steps\": 100}'")
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {assignment!r}: expected key=value")
        *parents, leaf = key.split(".")
        target = spec
        for name in parents:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise ValueError(f"--set {assignment!r}: {name} is not an object in the spec")
        try:
            target[leaf] = json.loads(value)
        except json.JSONDecodeError:
            target[leaf] = value
    return spec


def _when(text: str | None, flag: str, past: bool = False) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_when(text, past=past)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


# --- commands -------------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    return Client(url=args.url, token=args.token)


def _emit(args: argparse.Namespace, raw: Any, text: str) -> None:
    print(tables.render_json(raw) if args.format == "json" else text)


def _summary(job: Job) -> str:
    return f"{job.state} ({job.reason})" if job.reason else job.state


def _submit(args: argparse.Namespace) -> int:
    spec = parse_spec(args.spec, args.set)
    client = _client(args)
    job = client.submit(args.kind, spec, gpus=args.gpus, deadline=_when(args.deadline, "--deadline"),
                        zones=args.zone, interruptible=args.interruptible)
    if not args.wait:
        _emit(args, job.raw, f"submitted job {job.id}: {_summary(job)}")
        return 0
    print(f"submitted job {job.id}; waiting for it to finish (Ctrl-C stops waiting, not the job)", file=sys.stderr)
    try:
        job = client.wait(job.id)
    except KeyboardInterrupt:
        print(f"wattsched: stopped waiting; job {job.id} goes on (`wattsched cancel {job.id}` stops it)",
              file=sys.stderr)
        return 130
    _emit(args, job.raw, tables.render_job(job))
    return 0 if job.state == JobState.SUCCEEDED else 1


def _status(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.job_id is None:
        status = client.status()
        _emit(args, status, tables.render_status(status))
    else:
        job = client.get(args.job_id)
        _emit(args, job.raw, tables.render_job(job))
    return 0


def _list(args: argparse.Namespace) -> int:
    jobs = _client(args).list(state=args.state, kind=args.kind, limit=args.limit, offset=args.offset)
    print(tables.render_jobs(jobs, args.format))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job_id)
    if job.state == JobState.CANCELLED:
        text = f"cancelled job {job.id}"
    else:
        text = f"cancel requested for job {job.id}: it is {job.state} and stops shortly"
    _emit(args, job.raw, text)
    return 0


def _history(args: argparse.Namespace) -> int:
    history = _client(args).history(since=_when(args.since, "--since", past=True),
                                    until=_when(args.until, "--until", past=True), kind=args.kind)
    print(tables.render_history(history, args.format))
    return 0


def _carbon(args: argparse.Namespace) -> int:
    duration_s = None
    if args.duration is not None:
        if not _DURATIONS.fullmatch(args.duration):
            raise ValueError(f"--duration: {args.duration!r} is not a duration such as 90m, 2h or 1d")
        duration_s = sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(args.duration))
    zones = _client(args).carbon(zone=args.zone, duration_s=duration_s)
    _emit(args, zones, tables.render_carbon(zones))
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    url = args.db
    if url is None:
        from scheduler.config import Settings

        url = Settings.from_env().resolved_database_url
    importlib.import_module("scheduler.db").upgrade(url)  # imported here: it pulls in sqlalchemy and alembic
    print("database schema is up to date")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    return int(importlib.import_module("scheduler.simulation.cli").run(args) or 0)


def _run_main_of(module: str) -> Callable[[argparse.Namespace], int]:
    """A command that runs ``module.main(args)``, imported only when run: it pulls in ray, sqlalchemy, torch."""

    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).main(args) or 0)

    return run


# --- the parser -----------------------------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--url", default=default,
                        help="the daemon's URL (default: WATTSCHED_URL, else the local daemon)")
    parser.add_argument("--token", default=default,
                        help="API token (default: WATTSCHED_TOKEN, else the local daemon's)")


def build_parser() -> argparse.ArgumentParser:
    """The ``wattsched`` argument parser; each subcommand sets ``command`` to the function that runs it."""
    parser = argparse.ArgumentParser(prog="wattsched",
                                     description="Energy- and carbon-aware scheduling of GPU jobs.")
    _connection_options(parser, None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], summary: str,
                connects: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        if connects:
            # Also accepted after the command; SUPPRESS keeps an absent flag from erasing one given before it.
            _connection_options(sub, argparse.SUPPRESS)
        sub.set_defaults(command=run)
        return sub

    def output(sub: argparse.ArgumentParser, choices: Sequence[str]) -> None:
        sub.add_argument("--format", choices=choices, default=choices[0],
                         help=f"output format (default {choices[0]})")

    sub = command("submit", _submit, "queue a job")
    sub.add_argument("kind", metavar="KIND", help="job kind, e.g. diffusion-train or diffusion-sample")
    sub.add_argument("--spec", metavar="JSON|@FILE", help="job spec as a JSON object, or @path to a JSON file")
    sub.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                     help="set one spec field (dotted keys nest; JSON values); repeatable")
    sub.add_argument("--gpus", type=int, default=1, help="GPUs the job needs (default 1)")
    sub.add_argument("--deadline", metavar="WHEN",
                     help="finish by then: ISO 8601 or +DURATION (+2h, +1d12h); lets it wait for cleaner power")
    sub.add_argument("--zone", action="append", metavar="ZONE",
                     help="grid zone it may run in (e.g. DE, FR); repeatable; default any")
    sub.add_argument("--interruptible", action="store_true",
                     help="it may be suspended at a checkpoint and resumed later")
    sub.add_argument("--wait", action="store_true",
                     help="wait until it finishes; exit 0 only if it succeeded")
    output(sub, ("text", "json"))

    sub = command("status", _status, "the daemon's status, or one job with its runs, energy and reason")
    sub.add_argument("job_id", metavar="JOB_ID", nargs="?", help="a job id; without it, the daemon's status")
    output(sub, ("text", "json"))

    sub = command("list", _list, "jobs, newest first, with why each waiting job waits")
    sub.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    sub.add_argument("--kind", help="only jobs of this kind")
    sub.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    sub.add_argument("--offset", type=int, default=0, help="skip this many of the newest first (default 0)")
    output(sub, tables.FORMATS)

    sub = command("cancel", _cancel, "cancel a job (a running one stops shortly)")
    sub.add_argument("job_id", metavar="JOB_ID")
    output(sub, ("text", "json"))

    sub = command("history", _history, "energy and emissions of jobs, with totals")
    sub.add_argument("--since", metavar="WHEN",
                     help="jobs started from then: ISO 8601 or a duration ago (7d, 12h); --since=-7d also works")
    sub.add_argument("--until", metavar="WHEN", help="jobs started before then: ISO 8601 or a duration ago")
    sub.add_argument("--kind", help="only jobs of this kind")
    output(sub, tables.FORMATS)

    sub = command("carbon", _carbon, "carbon intensity now, its source and health, and the next 48 h")
    sub.add_argument("zone", metavar="ZONE", nargs="?", help="one zone (default: every zone with GPUs)")
    sub.add_argument("--duration", metavar="DURATION", help="also find the cleanest window for a job this long (2h)")
    output(sub, ("text", "json"))

    sub = commands.add_parser("db", help="manage the daemon's database", description="manage the daemon's database")
    actions = sub.add_subparsers(title="actions", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="create or migrate the schema to the latest version")
    upgrade.set_defaults(command=_db_upgrade)
    upgrade.add_argument("--db", metavar="URL",
                         help="SQLAlchemy URL (default: WATTSCHED_DATABASE_URL, else the SQLite file in the "
                              "data directory)")

    # Defaults are None so that the daemon's own settings (WATTSCHED_HOST, WATTSCHED_PORT, ...) apply.
    sub = command("daemon", _run_main_of("scheduler.daemon"), "run the scheduler daemon and its REST API",
                  connects=False)
    sub.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST}, or WATTSCHED_HOST)")
    sub.add_argument("--port", type=int, help=f"port to listen on (default {DEFAULT_PORT}, or WATTSCHED_PORT)")
    sub.add_argument("--policy", help="scheduling policy (default fifo, or WATTSCHED_POLICY)")
    sub.add_argument("--gpus", type=int,
                     help="logical GPUs to declare on a machine without GPUs (or WATTSCHED_LOGICAL_GPUS)")

    command("demo", _run_main_of("scheduler.demo"), "run a small end-to-end demo on this machine", connects=False)

    sub = command("simulate", _simulate, "replay a job trace against carbon traces with a policy (no GPUs needed)",
                  connects=False)
    importlib.import_module("scheduler.simulation.cli").add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wattsched`` with ``argv`` (default: the command line); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and usage errors (2); a status suits main better
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return args.command(args)
    except _USER_ERRORS as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, Unauthorized):
            message += " (pass --token or set WATTSCHED_TOKEN)"
        print(f"wattsched: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wattsched: interrupted", file=sys.stderr)
        return 130

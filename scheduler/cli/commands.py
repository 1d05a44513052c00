"""The ``wattsched`` command: submit, inspect and cancel jobs, query their energy, run the daemon or the demo.

::

    wattsched submit diffusion-train --spec '{"steps": 200}' --set batch_size=64 --deadline +6h --zone DE
    wattsched submit diffusion-sample --set checkpoint='"job:ID"' --depends-on ID --not-before +2h --hold
    wattsched list --state pending
    wattsched status JOB_ID
    wattsched logs -f JOB_ID
    wattsched hold JOB_ID; wattsched release JOB_ID
    wattsched history --since 7d --format csv > energy.csv
    wattsched history --by user --since 30d; wattsched history --format codecarbon > emissions.csv
    wattsched history --plot energy.png --plot-by kind
    wattsched token create --user alice [--role admin]   # on the daemon's database, like `db upgrade`

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

from scheduler.cli import tables
from scheduler.cli.extras import naming_missing_extras
from scheduler.client import DEFAULT_HOST, DEFAULT_PORT, Client, ClientError, Job, Unauthorized
from scheduler.errors import WattschedError
from scheduler.store.job_state import JobState

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


def parse_duration(text: str, flag: str) -> float:
    """Seconds from ``90m``, ``2h``, ``1d12h``, a number of seconds, or Slurm's ``[D-]HH:MM[:SS]`` / ``MM``."""
    text = text.strip()
    if _DURATIONS.fullmatch(text):
        return sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(text))
    slurm = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if slurm:
        days, first, second, third = slurm.groups()
        if second is None and days is None:  # a bare number: seconds
            return float(first)
        parts = [int(first), int(second or 0), int(third or 0)]  # HH:MM[:SS], as Slurm reads D-HH:MM:SS
        return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    raise ValueError(f"{flag}: {text!r} is not a duration such as 90m, 2h, 1d12h or 1-12:00:00")


#: --memory-limit's units, in GiB (as Slurm's --mem reads them, powers of 1024; a bare number is GiB).
_MEMORY_UNITS_GIB = {"k": 1 / 1024**2, "m": 1 / 1024, "g": 1.0, "t": 1024.0}


def parse_memory_gib(text: str) -> float:
    """GiB from ``512M``, ``4G``, ``4GiB``, ``1T`` or a number of GiB."""
    size = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt])?(?:i?b)?", text.strip().lower())
    if not size:
        raise ValueError(f"--memory-limit: {text!r} is not a size such as 512M, 4G or 1T")
    return float(size.group(1)) * _MEMORY_UNITS_GIB[size.group(2) or "g"]


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


def split_command_line(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """``wattsched submit ... -- CMD ARG...``: the arguments before ``--``, and the command line after it (None
    without one), as ``ray job submit -- ...`` reads them."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        if "submit" in argv[:cut]:
            return argv[:cut], argv[cut + 1:]
    return argv, None


def command_spec(spec: dict[str, Any], command_line: list[str] | None, cwd: str | None,
                 env: Sequence[str]) -> dict[str, Any]:
    """A ``command`` job's spec: ``spec`` with the command line given after ``--``, ``--cwd`` and ``--env``."""
    if command_line:
        spec["argv"] = command_line
    if not spec.get("argv"):
        raise ValueError("submit command: give the command line after --, e.g. "
                         "wattsched submit command --gpus 2 -- python train.py --lr 1e-4")
    if cwd is not None:
        spec["cwd"] = cwd
    for assignment in env:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"--env {assignment!r}: expected NAME=VALUE")
        spec.setdefault("env", {})[name] = value
    return spec


def _submit(args: argparse.Namespace) -> int:
    spec = parse_spec(args.spec, args.set)
    command_line = getattr(args, "command_line", None)
    if args.kind == "command":
        spec = command_spec(spec, command_line, args.cwd, args.env)
    elif command_line is not None or args.cwd is not None or args.env:
        raise ValueError(f"a command line after --, --cwd and --env are for command jobs, not {args.kind} jobs: "
                         "wattsched submit command [options] -- CMD ARG...")
    client = _client(args)
    depends_on = [j for value in args.depends_on for j in value.replace(":", ",").split(",")
                  if j and j not in ("afterok",)] or None
    job = client.submit(args.kind, spec, gpus=args.gpus, deadline=_when(args.deadline, "--deadline"),
                        zones=args.zone, interruptible=args.interruptible,
                        not_before=_when(args.not_before, "--not-before"),
                        time_limit_s=parse_duration(args.time_limit, "--time-limit") if args.time_limit else None,
                        priority=args.priority, hold=args.hold, depends_on=depends_on,
                        idempotency_key=args.idempotency_key, gpus_per_node=args.gpus_per_node,
                        launch=args.launch, stop_signal=args.signal,
                        grace_s=parse_duration(args.grace, "--grace") if args.grace else None,
                        memory_limit_gib=parse_memory_gib(args.memory_limit) if args.memory_limit else None)
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
    jobs = _client(args).list(state=args.state, kind=args.kind, limit=args.limit, offset=args.offset,
                              user=args.user, zone=args.zone, since=_when(args.since, "--since", past=True),
                              until=_when(args.until, "--until", past=True))
    print(tables.render_jobs(jobs, args.format))
    return 0


def _hold(args: argparse.Namespace) -> int:
    client = _client(args)
    for job_id in args.job_ids:
        job = client.hold(job_id) if args.command_name == "hold" else client.release(job_id)
        _emit(args, job.raw, f"{'held' if job.hold else 'released'} job {job.id}: {_summary(job)}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    stream = "events" if args.events else "stderr"
    try:
        for text in _client(args).logs(args.job_id, follow=args.follow, stream=stream):
            sys.stdout.write(text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    return 0


def _cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job_id)
    if job.state == JobState.CANCELLED:
        text = f"cancelled job {job.id}"
    else:
        text = f"cancel requested for job {job.id}: it is {job.state} and stops shortly"
    _emit(args, job.raw, text)
    return 0


def _delete(args: argparse.Namespace) -> int:
    removed = _client(args).delete(args.job_id)
    text = f"deleted job {args.job_id}" + ("" if removed else "; its directory was left in place (see the "
                                                                "daemon's log)")
    _emit(args, {"id": args.job_id, "deleted": True, "outputs_removed": removed}, text)
    return 0


def _history(args: argparse.Namespace) -> int:
    history = _client(args).history(since=_when(args.since, "--since", past=True),
                                    until=_when(args.until, "--until", past=True), kind=args.kind,
                                    state=args.state, user=args.user, zone=args.zone, group_by=args.by)
    if args.plot:
        from scheduler.cli.plots import plot_history  # matplotlib: only when a chart is asked for

        path = plot_history([row.raw for row in history.jobs], args.plot, by=args.plot_by)
        print(f"wrote {path} ({len(history.jobs)} jobs, energy and emissions per day by {args.plot_by})",
              file=sys.stderr)
        return 0
    print(tables.render_history(history, args.format))
    return 0


def _token_store(args: argparse.Namespace):
    """The token store on the daemon's database (``--db``, else the configured one), schema upgraded."""
    from scheduler.store.auth import TokenStore
    from scheduler.clock import utc_now
    from scheduler.config import Settings
    from scheduler.store.engine import upgrade
    from scheduler.store.engine import make_engine, make_session_factory

    engine = make_engine(args.db or Settings.from_env().resolved_database_url)
    upgrade(engine)
    return TokenStore(make_session_factory(engine), utc_now)


def _token(args: argparse.Namespace) -> int:
    action = args.action
    if args.api:
        client = _client(args)
        if action == "create":
            made = client.create_token(args.user, args.role, args.name)
        elif action == "list":
            _emit(args, client.list_tokens(args.all), tables.render_tokens(client.list_tokens(args.all)))
            return 0
        else:
            client.revoke_token(args.token_id)
            print(f"revoked token {args.token_id}")
            return 0
    else:
        store = _token_store(args)
        if action == "create":
            new = store.create_token(args.user, args.role, args.name)
            made = {"id": new.id, "user": new.user, "role": new.role, "name": new.name, "token": new.secret}
        elif action == "list":
            tokens = store.list_tokens(args.all)
            _emit(args, tokens, tables.render_tokens(tokens))
            return 0
        else:
            if not store.revoke(args.token_id):
                raise ValueError(f"no active token with id {args.token_id}")
            print(f"revoked token {args.token_id}")
            return 0
    _emit(args, made, f"token {made['id']} for {made['user']} ({made['role']}); it is shown only now:\n"
                      f"{made['token']}\nuse it with WATTSCHED_TOKEN=... or --token")
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
    importlib.import_module("scheduler.store.engine").upgrade(url)  # imported here: it pulls in sqlalchemy and alembic
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
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True, dest="command_name")

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

    sub = command("submit", _submit, "queue a job; a command job's command line follows --: "
                  "wattsched submit command --gpus 2 -- python train.py --lr 1e-4")
    sub.add_argument("kind", metavar="KIND", help="job kind, e.g. diffusion-train, diffusion-sample or command")
    sub.add_argument("--spec", metavar="JSON|@FILE", help="job spec as a JSON object, or @path to a JSON file")
    sub.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                     help="set one spec field (dotted keys nest; JSON values); repeatable")
    sub.add_argument("--gpus", type=int, default=1, help="GPUs the job needs (default 1)")
    sub.add_argument("--gpus-per-node", type=int, metavar="K",
                     help="run the job's GPUs K to a node (default: the fewest nodes that fit)")
    sub.add_argument("--launch", choices=("per-gpu", "per-node"),
                     help="one process per GPU with torchrun's environment (default), or one per node")
    sub.add_argument("--signal", metavar="SIGNAL",
                     help="signal that asks the job to stop at a checkpoint (default SIGTERM; as Slurm's --signal)")
    sub.add_argument("--grace", metavar="DURATION",
                     help="time from that signal to SIGKILL, to checkpoint and exit (default 120s)")
    sub.add_argument("--memory-limit", metavar="SIZE",
                     help="memory each of the job's processes may allocate: 512M, 4G (GiB), 1T; default none")
    sub.add_argument("--deadline", metavar="WHEN",
                     help="finish by then: ISO 8601 or +DURATION (+2h, +1d12h); lets it wait for cleaner power")
    sub.add_argument("--zone", action="append", metavar="ZONE",
                     help="grid zone it may run in (e.g. DE, FR); repeatable; default any")
    sub.add_argument("--interruptible", action="store_true",
                     help="it may be suspended at a checkpoint and resumed later")
    sub.add_argument("--not-before", metavar="WHEN",
                     help="do not start before then: ISO 8601 or +DURATION (Slurm's --begin)")
    sub.add_argument("--time-limit", metavar="DURATION",
                     help="wall-clock limit: 90m, 2h, 1d12h or Slurm's [D-]HH:MM[:SS]")
    sub.add_argument("--priority", type=int, default=0, help="-1000..1000, higher first (default 0)")
    sub.add_argument("--hold", action="store_true", help="queue it held: it waits until `wattsched release`")
    sub.add_argument("--depends-on", metavar="JOB_ID[,JOB_ID]", action="append", default=[],
                     help="start only after these jobs succeeded (also afterok:ID:ID); repeatable")
    sub.add_argument("--idempotency-key", metavar="KEY",
                     help="submitting again with the same key returns the same job (default: a fresh key)")
    sub.add_argument("--wait", action="store_true",
                     help="wait until it finishes; exit 0 only if it succeeded")
    sub.add_argument("--cwd", metavar="DIR",
                     help="command jobs: where the command runs (relative: under the job's directory; default it)")
    sub.add_argument("--env", metavar="NAME=VALUE", action="append", default=[],
                     help="command jobs: a variable added to the command's environment; repeatable")
    output(sub, ("text", "json"))

    sub = command("status", _status, "the daemon's status, or one job with its runs, energy and reason")
    sub.add_argument("job_id", metavar="JOB_ID", nargs="?", help="a job id; without it, the daemon's status")
    output(sub, ("text", "json"))

    sub = command("list", _list, "jobs, newest first, with why each waiting job waits")
    sub.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    sub.add_argument("--kind", help="only jobs of this kind")
    sub.add_argument("--user", help="only this user's jobs (admins)")
    sub.add_argument("--zone", help="only jobs that ran in this zone")
    sub.add_argument("--since", metavar="WHEN", help="submitted from then: ISO 8601 or a duration ago (7d)")
    sub.add_argument("--until", metavar="WHEN", help="submitted before then")
    sub.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    sub.add_argument("--offset", type=int, default=0, help="skip this many of the newest first (default 0)")
    output(sub, tables.FORMATS)

    sub = command("cancel", _cancel, "cancel a job (a running one stops shortly)")
    sub.add_argument("job_id", metavar="JOB_ID")
    output(sub, ("text", "json"))

    sub = command("delete", _delete, "delete a job that has ended, with its runs, energy and outputs (admins: "
                  "any job; users: their own)")
    sub.add_argument("job_id", metavar="JOB_ID")
    output(sub, ("text", "json"))

    for name, summary in (("hold", "keep waiting jobs from starting (like scontrol hold)"),
                          ("release", "let held jobs be scheduled again")):
        sub = command(name, _hold, summary)
        sub.add_argument("job_ids", metavar="JOB_ID", nargs="+")
        sub.set_defaults(command_name=name)
        output(sub, ("text", "json"))

    sub = command("logs", _logs, "a job's log (stderr.log; --events for events.jsonl); -f follows it")
    sub.add_argument("job_id", metavar="JOB_ID")
    sub.add_argument("-f", "--follow", action="store_true", help="keep printing until the job is over")
    sub.add_argument("--events", action="store_true", help="the job's events.jsonl (progress, results) instead")

    sub = command("history", _history, "energy and emissions of jobs, with totals")
    sub.add_argument("--since", metavar="WHEN",
                     help="jobs started from then: ISO 8601 or a duration ago (7d, 12h); --since=-7d also works")
    sub.add_argument("--until", metavar="WHEN", help="jobs started before then: ISO 8601 or a duration ago")
    sub.add_argument("--kind", help="only jobs of this kind")
    sub.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    sub.add_argument("--user", help="only this user's jobs (admins)")
    sub.add_argument("--zone", help="only jobs that ran in this zone")
    sub.add_argument("--by", choices=("user", "kind", "zone", "day", "state"),
                     help="sums per user, kind, zone, day or state instead of one row per job")
    sub.add_argument("--plot", metavar="FILE.png", help="write a chart of energy and emissions per day instead")
    sub.add_argument("--plot-by", choices=("kind", "user", "zone"), default="kind",
                     help="what the chart's bars are split by (default kind)")
    output(sub, tables.HISTORY_FORMATS)

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

    sub = commands.add_parser("token", help="manage API tokens (on the database directly, or --api)",
                              description="manage API tokens: on the daemon's database directly (like `db "
                                          "upgrade`, so the first admin token can be made), or through the "
                                          "API as an admin with --api")
    actions = sub.add_subparsers(title="actions", metavar="ACTION", required=True)
    for action, summary in (("create", "make a token (and its user if new); printed once"),
                            ("list", "list tokens (never their secrets)"), ("revoke", "revoke a token")):
        act = actions.add_parser(action, help=summary, description=summary)
        act.set_defaults(command=_token, action=action)
        act.add_argument("--db", metavar="URL", help="SQLAlchemy URL (default: WATTSCHED_DATABASE_URL, else the "
                                                     "SQLite file in the data directory)")
        act.add_argument("--api", action="store_true", help="through the daemon's API (needs an admin token)")
        _connection_options(act, argparse.SUPPRESS)
        output(act, ("text", "json"))
        if action == "create":
            act.add_argument("--user", required=True, help="the user the token is for (created if new)")
            act.add_argument("--role", choices=("admin", "user"),
                             help="the user's role (default: user for a new user; unchanged otherwise)")
            act.add_argument("--name", default="", help="a label for the token (e.g. the machine it is used on)")
        elif action == "list":
            act.add_argument("--all", action="store_true", help="also revoked tokens")
        else:
            act.add_argument("token_id", metavar="TOKEN_ID", type=int)

    # Defaults are None so that the daemon's own settings (WATTSCHED_HOST, WATTSCHED_PORT, ...) apply.
    sub = command("daemon", _run_main_of("scheduler.daemon.daemon"), "run the scheduler daemon and its REST API",
                  connects=False)
    sub.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST}, or WATTSCHED_HOST)")
    sub.add_argument("--port", type=int, help=f"port to listen on (default {DEFAULT_PORT}, or WATTSCHED_PORT)")
    sub.add_argument("--policy", help="scheduling policy (default fifo, or WATTSCHED_POLICY)")
    sub.add_argument("--gpus", type=int,
                     help="logical GPUs to declare on a machine without GPUs (or WATTSCHED_LOGICAL_GPUS)")

    command("demo", _run_main_of("scheduler.cli.demo"), "run a small end-to-end demo on this machine", connects=False)

    sub = command("levers", _run_main_of("scheduler.cli.levers.main"),
                  "measure what energy levers are worth (precision, checkpointing, batch, sampler steps, diffusion "
                  "vs GAN vs VAE) on a daemon (--url; without it, one embedded in this process) and write a report")
    importlib.import_module("scheduler.cli.levers.main").add_arguments(sub)

    sub = command("simulate", _simulate, "replay a job trace against carbon traces with a policy (no GPUs needed)",
                  connects=False)
    importlib.import_module("scheduler.simulation.cli").add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wattsched`` with ``argv`` (default: the command line); returns the exit status."""
    argv, command_line = split_command_line(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and usage errors (2); a status suits main better
        return exc.code if isinstance(exc.code, int) else 0
    args.command_line = command_line
    try:
        with naming_missing_extras(args.command_name):  # a command of an absent extra says which to install
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

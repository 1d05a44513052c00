"""Plain-text tables, CSV and JSON of jobs, energy history and daemon status, and the human units they use.

Every energy figure is printed beside how it was obtained (``1,234 J (simulated)``): an estimate or a simulated
figure must never read as a measurement. Text output is for people; CSV and JSON keep the API's raw numbers
and ISO times, for scripts.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from scheduler.client import History, Job, JobEnergy

FORMATS = ("table", "csv", "json")
HISTORY_FORMATS = ("table", "csv", "json", "codecarbon")
NONE = "-"  # how a missing value reads in text output
NOT_AVAILABLE = "n/a"  # a figure that cannot be computed (no counterfactual known), not a zero
RUN_RUNNING, RUN_LOST = "running", "lost"  # run exit statuses as the API says them


# --- units --------------------------------------------------------------------------------------------


def format_number(value: float | None, digits: int = 3) -> str:
    """At least ``digits`` significant digits, positional, with thousands separators: 0.000343, 12.3, 1,235."""
    if value is None:
        return NONE
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def format_joules(energy_j: float | None) -> str:
    """Energy in joules: ``1,234 J``."""
    return NONE if energy_j is None else f"{format_number(energy_j)} J"


def format_kwh(energy_kwh: float | None) -> str:
    """Energy in kilowatt-hours: ``0.000343 kWh``."""
    return NONE if energy_kwh is None else f"{format_number(energy_kwh)} kWh"


def format_duration(duration_s: float | None) -> str:
    """A duration for people: ``4.2s``, ``42s``, ``12m05s``, ``3h04m``, ``2d03h``."""
    if duration_s is None:
        return NONE
    if duration_s < 9.95:
        return f"{duration_s:.1f}s"
    seconds = round(duration_s)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_time(at: datetime | None) -> str:
    """A UTC time to the second: ``2026-06-01 18:00:00Z``."""
    return NONE if at is None else at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def method_label(methods: Iterable[str]) -> str:
    """How a figure was obtained, e.g. ``simulated`` or ``nvml-counter+rapl``; ``unknown`` if nobody said."""
    return "+".join(methods) or "unknown"


def short_id(value: Any) -> str:
    """An id for a text table: Ray's 56-hex-digit node ids cut to 12, like Docker's short ids; others whole."""
    text = NONE if value is None else str(value)
    if len(text) > 16 and all(c in "0123456789abcdef" for c in text):
        return text[:12]
    return text


def job_duration_s(job: Job, now: datetime | None = None) -> float | None:
    """Seconds from start to finish; for a job still going, so far (as of ``now``)."""
    if job.started_at is None:
        return None
    end = job.finished_at or now or datetime.now(timezone.utc)
    return (end - job.started_at).total_seconds()


# --- generic renderers ---------------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = ()) -> str:
    """Columns separated by two spaces, like squeue or kubectl; columns in ``numeric`` are right-aligned."""
    rows = [list(r) for r in rows]
    right = set(numeric)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join(line(r).rstrip() for r in [list(headers), *rows])


def render_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


def render_json(value: Any) -> str:
    return json.dumps(value, indent=2)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


# --- jobs ---------------------------------------------------------------------------------------------

_JOB_HEADERS = ("id", "kind", "state", "duration", "energy J", "kWh", "method", "emissions g", "carbon", "reason")
_JOB_CSV_HEADERS = (
    "id", "kind", "state", "reason", "gpus", "zones", "deadline", "interruptible", "cancel_requested",
    "submitted_at", "started_at", "finished_at", "duration_s", "gpu_energy_j", "cpu_energy_j", "energy_j",
    "energy_kwh", "methods", "emissions_g", "intensity_g_per_kwh", "carbon_source",
)
_ENERGY_KEYS = ("gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh")
_CARBON_KEYS = ("emissions_g", "intensity_g_per_kwh", "carbon_source")


def _state(job: Job) -> str:
    if job.cancel_requested and not job.terminal:
        return f"{job.state} (cancelling)"
    return f"{job.state} (unschedulable)" if job.unschedulable and not job.terminal else job.state


def _reason(job: Job) -> str:
    """Why the job is in its state, with the policy plugin that decided when one did, and why its last run was
    lost when its reason no longer says (it runs again, say)."""
    reason = job.reason or ""
    reason = f"[{job.wait_plugin}] {reason}" if job.wait_plugin and not job.terminal else reason
    lost = _last_lost_message(job)
    return f"{reason} (last run lost: {lost})" if lost and lost not in reason else reason


def _last_lost_message(job: Job) -> str | None:
    """The first line of why the job's latest ended run was lost; None unless that run was lost."""
    ended = [r for r in job.runs if r.exit_status and r.exit_status != RUN_RUNNING]
    if not ended or ended[-1].exit_status != RUN_LOST:
        return None
    return _first_line(ended[-1].raw.get("message")) or "no reason given"


def _first_line(message: Any) -> str:
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def render_jobs(jobs: Sequence[Job], fmt: str = "table", now: datetime | None = None) -> str:
    """A list of jobs: a table with why each waiting job waits, CSV of the raw figures, or the API's JSON."""
    _check_format(fmt)
    if fmt == "json":
        return render_json([j.raw for j in jobs])
    if fmt == "csv":
        return render_csv(_JOB_CSV_HEADERS, (_job_csv_row(j, now) for j in jobs))
    rows = []
    for job in jobs:
        energy = job.energy
        rows.append([
            str(job.id), job.kind, _state(job), format_duration(job_duration_s(job, now)),
            format_number(energy.energy_j) if energy else NONE,
            format_number(energy.energy_kwh) if energy else NONE,
            method_label(energy.methods) if energy else NONE,
            format_number(energy.emissions_g) if energy else NONE,
            (energy.carbon_source or NONE) if energy else NONE,
            _reason(job),
        ])
    return render_table(_JOB_HEADERS, rows, numeric=(3, 4, 5, 7))


def _job_csv_row(job: Job, now: datetime | None) -> list[Any]:
    raw, energy = job.raw, job.raw.get("energy") or {}
    return [
        job.id, job.kind, job.state, job.reason, job.gpus, ";".join(job.zones), raw.get("deadline"),
        job.interruptible, job.cancel_requested, raw.get("submitted_at"), raw.get("started_at"),
        raw.get("finished_at"), job_duration_s(job, now),
        *(energy.get(k) for k in _ENERGY_KEYS), "+".join(energy.get("methods") or ()),
        *(energy.get(k) for k in _CARBON_KEYS),
    ]


def _energy_lines(energy: JobEnergy) -> list[tuple[str, str]]:
    total = method_label(energy.methods)
    lines = [("energy", f"{format_joules(energy.energy_j)} ({total}) = {format_kwh(energy.energy_kwh)} ({total})")]
    for label, joules, method in (("  gpu", energy.gpu_energy_j, energy.gpu_method),
                                  ("  cpu", energy.cpu_energy_j, energy.cpu_method)):
        if joules is not None:
            lines.append((label, f"{format_joules(joules)} ({method or total})"))
    if energy.avg_power_w is not None:
        peak = f", peak {format_number(energy.peak_power_w)} W" if energy.peak_power_w is not None else ""
        lines.append(("power", f"avg {format_number(energy.avg_power_w)} W{peak} ({total})"))
    if energy.emissions_g is None:
        lines.append(("emissions", f"{NONE} (no carbon intensity known)"))
    else:
        intensity = ""
        if energy.intensity_g_per_kwh is not None:
            intensity = f" at {format_number(energy.intensity_g_per_kwh)} g/kWh"
        lines.append(("emissions", f"{format_number(energy.emissions_g)} g CO2e{intensity} "
                                   f"(carbon source: {energy.carbon_source or 'unknown'})"))
    return lines


def _node_energy_lines(result: Any) -> list[tuple[str, str]]:
    """A gang's per-node breakdown (its run's ``result.nodes``, scheduler/cluster/gang.py): each node's ranks, GPUs,
    energy and how it ended; none for a job on one node."""
    return _node_lines(result.get("nodes") if isinstance(result, dict) else None)


def _node_lines(nodes: Any) -> list[tuple[str, str]]:
    """Each node of a gang's run (a run's ``nodes``, or its job's ``result.nodes``); none for a run on one node."""
    if not isinstance(nodes, list) or not nodes:
        return []
    lines = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        gpu_j, cpu_j = node.get("gpu_energy_j"), node.get("cpu_energy_j")
        total_j = None if gpu_j is None and cpu_j is None else (gpu_j or 0.0) + (cpu_j or 0.0)
        energy = f"{format_joules(total_j)} (gpu {format_joules(gpu_j)}, cpu {format_joules(cpu_j)})"
        ranks = ",".join(str(r) for r in node.get("ranks") or ())
        lines.append((f"  node {node.get('node_rank', '?')}",
                      f"{short_id(str(node.get('node_id') or NONE))} ranks {ranks or NONE}: {energy}, "
                      f"{node.get('samples', 0)} samples, {node.get('exit_status') or NONE}"))
    return lines


def render_job(job: Job, now: datetime | None = None) -> str:
    """One job in full: its request, state and reason, times, energy and emissions, and each run."""
    pairs: list[tuple[str, str]] = [
        ("job", f"{job.id}  {job.kind}  {_state(job)}"),
        ("reason", job.reason or NONE),
        *([("decided by", f"{job.wait_plugin} ({job.wait_code})")] if job.wait_plugin and not job.terminal else []),
        ("gpus", str(job.gpus)),
        ("zones", ", ".join(job.zones) or "any"),
        ("deadline", format_time(job.deadline) if job.deadline else "none"),
        ("interruptible", "yes" if job.interruptible else "no"),
    ]
    if job.user:
        pairs.append(("user", job.user))
    if job.hold:
        pairs.append(("held", "yes (`wattsched release` lets it run)"))
    if job.not_before:
        pairs.append(("not before", format_time(job.not_before)))
    if job.time_limit_s:
        pairs.append(("time limit", format_duration(job.time_limit_s)))
    if job.priority:
        pairs.append(("priority", str(job.priority)))
    if job.depends_on:
        pairs.append(("depends on", ", ".join(job.depends_on)))
    pairs += [
        ("submitted", format_time(job.submitted_at)),
        ("started", format_time(job.started_at)),
        ("finished", format_time(job.finished_at)),
        ("duration", format_duration(job_duration_s(job, now))),
    ]
    if job.progress:
        pairs.append(("progress", json.dumps(job.progress)))
    pairs.extend(_energy_lines(job.energy) if job.energy else [("energy", f"{NONE} (not measured yet)")])
    runs_nodes = [(run, lines) for run in job.runs if (lines := _node_lines(run.raw.get("nodes")))]
    if not runs_nodes:  # runs stored before each kept its own: a succeeded gang's breakdown is in its result
        pairs.extend(_node_energy_lines(job.result))
    if job.error:
        pairs.append(("error", job.error))
    if job.result is not None:
        pairs.append(("result", json.dumps(job.result)))
    pairs.append(("spec", json.dumps(job.spec)))
    width = max(len(k) for k, _ in pairs)
    text = "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)
    if job.runs:
        rows = [[str(r.attempt if r.attempt is not None else NONE), short_id(r.node_id), r.zone or NONE,
                 ",".join(str(g) for g in r.gpu_ids) or NONE, format_number(r.power_cap_w),
                 format_time(r.started_at), format_time(r.ended_at), r.exit_status or NONE,
                 _first_line(r.raw.get("message")) or NONE] for r in job.runs]
        text += "\n\nruns\n" + render_table(
            ("attempt", "node", "zone", "gpus", "cap W", "started", "ended", "exit", "why"), rows, numeric=(0, 4))
    for run, lines in runs_nodes:  # a gang's breakdown per run, however the run ended
        width = max(len(k) for k, _ in lines)
        text += (f"\n\nnodes of attempt {run.attempt if run.attempt is not None else NONE} "
                 f"({run.exit_status or NONE})\n" + "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines))
    return text


# --- history ------------------------------------------------------------------------------------------

_HISTORY_HEADERS = ("id", "kind", "state", "zone", "duration", "energy J", "kWh", "method", "emissions g", "carbon",
                    "saved g")


def _saving(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else format_number(value)


def render_history(history: History, fmt: str = "table") -> str:
    """Energy history: a table ending in a totals row (or per-group sums when grouped), CSV of the raw rows,
    the API's JSON, or CodeCarbon's emissions.csv. ``saved g`` is against each job's fifo counterfactual, n/a
    where none is known."""
    from scheduler.store import exports

    if fmt not in HISTORY_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(HISTORY_FORMATS)}")
    if fmt == "json":
        return render_json(history.raw)
    if fmt == "codecarbon":
        return exports.codecarbon_csv(row.raw for row in history.jobs).rstrip("\n")
    if fmt == "csv":
        if history.group_by:
            return exports.groups_csv(history.groups, history.group_by).rstrip("\n")
        return exports.history_csv(row.raw for row in history.jobs).rstrip("\n")
    if history.group_by:
        return _render_groups(history)
    rows = [[str(r.job_id), r.kind or NONE, r.state or NONE, r.zone or NONE, format_duration(r.duration_s),
             format_number(r.energy_j), format_number(r.energy_kwh),
             NONE if r.energy_j is None else method_label(r.methods),
             format_number(r.emissions_g), r.carbon_source or NONE, _saving(r.saving_g)] for r in history.jobs]
    for label, total in _total_rows(history):
        rows.append([label, f"{total['jobs']} job{'' if total['jobs'] == 1 else 's'}", "", "", "",
                     format_number(total.get("energy_j")), format_number(total.get("energy_kwh")),
                     method_label(total.get("methods") or ()) if total.get("methods") else NONE,
                     format_number(total.get("emissions_g")), "", _saving(total.get("saving_g"))])
    return render_table(_HISTORY_HEADERS, rows, numeric=(4, 5, 6, 8, 10)) + _unknowns(history.totals)


def _total_rows(history: History) -> list[tuple[str, dict[str, Any]]]:
    """One total per way the energy was obtained (never a sum across methods); jobs with no energy are left out
    (counted below the table)."""
    totals = history.totals
    metered = [t for t in totals.by_method if t.get("methods")]
    if not totals.by_method:  # a daemon that gives one total
        return [("total", {**totals.raw, "jobs": totals.jobs, "methods": history.methods})]
    return [("total" if len(metered) == 1 else "total of " + method_label(t["methods"]), t) for t in metered]


def _unknowns(totals) -> str:
    """What the totals leave out: jobs whose energy or emissions are unknown are counted, never added as zero;
    savings are modelled (against each job's fifo counterfactual)."""
    notes = []
    if totals.energy_unknown_jobs:
        notes.append(f"{totals.energy_unknown_jobs} job(s) with unknown energy, not in the totals")
    if totals.emissions_unknown_jobs:
        notes.append(f"{totals.emissions_unknown_jobs} job(s) with unknown emissions, not in the totals")
    basis = totals.saving_basis or next((t["saving_basis"] for t in totals.by_method if t.get("saving_basis")), None)
    if basis:
        notes.append(f"saved g is {basis}: against each job's fifo counterfactual, not measured")
    return "".join(f"\n{note}" for note in notes)


def _render_groups(history: History) -> str:
    by = history.group_by or "group"
    rows = [[str(g.get(by)), str(g.get("jobs", 0)), format_number(g.get("gpu_energy_j")),
             format_number(g.get("cpu_energy_j")), format_number(g.get("energy_j")),
             format_number(g.get("energy_kwh")), method_label(g.get("methods") or ()),
             format_number(g.get("emissions_g")),
             _saving(g.get("saving_g")) + (f" ({g['saving_jobs']} of {g['jobs']} jobs)"
                                           if g.get("saving_g") is not None else "")]
            for g in history.groups]
    for label, total in _total_rows(history):
        rows.append([label, str(total["jobs"]), format_number(total.get("gpu_energy_j")),
                     format_number(total.get("cpu_energy_j")), format_number(total.get("energy_j")),
                     format_number(total.get("energy_kwh")),
                     method_label(total.get("methods") or ()) if total.get("methods") else NONE,
                     format_number(total.get("emissions_g")), _saving(total.get("saving_g"))])
    return render_table((by, "jobs", "gpu J", "cpu J", "energy J", "kWh", "method", "emissions g", "saved g"),
                        rows, numeric=(1, 2, 3, 4, 5, 7)) + _unknowns(history.totals)


# --- daemon status ------------------------------------------------------------------------------------


def render_status(status: dict[str, Any]) -> str:
    """The daemon's status: version, policy, database, role (leader or standby), controller, carbon source, queue
    counts and its GPUs."""
    queue = status.get("queue") or {}
    role = f"  role {status['role']}" if status.get("role") else ""  # older daemons do not say
    lines = [
        f"wattsched {status.get('version', '?')}  policy {status.get('policy', '?')}  "
        f"database {status.get('database', '?')}{role}",
        "queue: " + (", ".join(f"{n} {state}" for state, n in queue.items()) or "empty"),
    ]
    if controller := status.get("controller"):
        outage = f" since {controller['since']}: {controller.get('reason')}" if controller.get("since") else ""
        lines.append(f"controller: {controller.get('state', '?')}{outage}")
    for zone in status.get("carbon") or []:
        health = zone.get("state", "?") + (f": {zone['reason']}" if zone.get("reason") else "")
        lines.append(f"carbon {zone.get('zone')}: {zone.get('source')} ({health})")
    gpus = status.get("gpus") or []
    if not gpus:
        return "\n".join(lines + ["no GPUs registered"])
    rows = [[str(g.get("worker_id", NONE)), short_id(g.get("node_id")), str(g.get("zone", NONE)),
             f"{g.get('gpu_name') or NONE}{' (logical)' if g.get('logical') else ''}",
             str(g.get("busy_job") or "idle")] for g in gpus]
    return "\n".join(lines) + "\n\n" + render_table(("worker", "node", "zone", "gpu", "job"), rows)


# --- carbon ---------------------------------------------------------------------------------------------

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One character per value, from ▁ (the lowest) to █ (the highest)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - low) / span * len(SPARKS)))] for v in values)


def render_carbon(zones: Sequence[dict[str, Any]]) -> str:
    """Per zone: current intensity, source and age, health, the forecast as a one-line chart, cleanest window."""
    blocks = []
    for z in zones:
        age = format_duration(z["age_s"]) + " old" if z.get("age_s") is not None else "age unknown"
        lines = [f"{z['zone']}: {format_number(z['intensity_g_per_kwh'])} g/kWh now "
                 f"({z['basis']}, {z['source']}, {age})"]
        if z.get("state") != "ok":
            lines.append(f"  degraded: {z.get('reason') or 'no reason given'}")
        if z.get("signal_index_percent") is not None:
            lines.append(f"  signal index: {z['signal_index_percent']:.0f} / 100 (a percentile, not an intensity)")
        forecast = z.get("forecast") or []
        if forecast:
            values = [p["intensity_g_per_kwh"] for p in forecast]
            first, last = forecast[0]["at"][:16].replace("T", " "), forecast[-1]["at"][:16].replace("T", " ")
            lines.append(f"  next {len(forecast)} points ({first} .. {last} UTC), "
                         f"{format_number(min(values))}-{format_number(max(values))} g/kWh:")
            lines.append("  " + sparkline(values))
        window = z.get("cleanest_window")
        if window:
            lines.append(f"  cleanest window: {window['start'][:16].replace('T', ' ')} -> "
                         f"{window['end'][:16].replace('T', ' ')} UTC, mean "
                         f"{format_number(window['mean_g_per_kwh'])} g/kWh")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no zones"


# --- tokens ---------------------------------------------------------------------------------------------


def render_tokens(tokens: Sequence[dict[str, Any]]) -> str:
    """API tokens (never their secrets): id, user, role, name, created, last used, revoked."""
    if not tokens:
        return "no tokens (make one with `wattsched token create --user NAME --role admin`)"

    def when(value: str | None) -> str:
        return format_time(datetime.fromisoformat(value)) if value else NONE

    rows = [[str(t["id"]), t["user"], t["role"], t.get("name") or NONE, when(t.get("created_at")),
             when(t.get("last_used_at")), when(t.get("revoked_at"))] for t in tokens]
    return render_table(("id", "user", "role", "name", "created", "last used", "revoked"), rows, numeric=(0,))

"""Energy history as aggregates and files: groups per user, kind, zone or day; CSV, JSON and CodeCarbon's
``emissions.csv``.

Pure functions over history rows (the dicts ``GET /v1/history`` serves), so the daemon and the CLI share them
and the client side stays light (no sqlalchemy, no pandas).

Savings: each row may carry ``counterfactual_emissions_g``, what the job would have emitted under the fifo
counterfactual (started at submission, full power). A saving is ``counterfactual - actual``; where no
counterfactual is known it is None ("n/a"), never zero.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from policies.units import J_PER_KWH

GROUP_BY = ("user", "kind", "zone", "day", "state")
"""Keys history can be aggregated by."""
SUM_KEYS = ("gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh", "emissions_g")
#: The label of a figure that is the output of a model, not a measurement (the fifo counterfactual, a saving).
MODELLED = "modelled"

CODECARBON_COLUMNS = (
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os", "python_version",
    "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
    "ram_total_size", "tracking_mode", "on_cloud", "pue",
)
"""CodeCarbon's emissions.csv columns (its ``EmissionsData``), in its order. Units as CodeCarbon's: duration s,
emissions kg CO2eq, emissions_rate kg/s, powers W, energies kWh. We add one column after them,
``wattsched_methods``, saying how each energy figure was obtained (simulated, estimate, nvml-counter, ...)."""


def group_key(row: Mapping[str, Any], by: str) -> str:
    """The group a history row falls in: its user, kind, zone, state, or UTC day of its start."""
    if by not in GROUP_BY:
        raise ValueError(f"group by: must be one of {', '.join(GROUP_BY)}, got {by!r}")
    if by == "day":
        started = row.get("started_at")
        return str(started)[:10] if started else "n/a"
    value = row.get(by)
    return "n/a" if value in (None, "") else str(value)


def aggregate(rows: Iterable[Mapping[str, Any]], by: str) -> list[dict[str, Any]]:
    """Sums per group, sorted by group: jobs, energies (J, kWh), emissions (g), and the saving against the fifo
    counterfactual over the jobs that have one (``saving_jobs`` of them; ``saving_g`` None when none)."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = group_key(row, by)
        group = groups.setdefault(key, {by: key, "jobs": 0, **{k: 0.0 for k in SUM_KEYS}, "methods": [],
                                        "counterfactual_emissions_g": None, "saving_g": None, "saving_jobs": 0})
        group["jobs"] += 1
        for k in SUM_KEYS:
            group[k] += row.get(k) or 0.0
        for method in row.get("methods") or ():
            if method not in group["methods"]:
                group["methods"].append(method)
        if row.get("saving_g") is not None:
            group["saving_jobs"] += 1
            group["saving_g"] = (group["saving_g"] or 0.0) + row["saving_g"]
            group["counterfactual_emissions_g"] = ((group["counterfactual_emissions_g"] or 0.0)
                                                   + row["counterfactual_emissions_g"])
    return [groups[k] for k in sorted(groups)]


def totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sums over all rows (the ``totals`` of a history answer)."""
    out: dict[str, Any] = {"jobs": len(rows)}
    for key in SUM_KEYS:
        out[key] = sum(r[key] for r in rows if r.get(key) is not None)
    savings = [r["saving_g"] for r in rows if r.get("saving_g") is not None]
    out["saving_g"] = sum(savings) if savings else None
    out["saving_jobs"] = len(savings)
    return out


# --- files ----------------------------------------------------------------------------------------------

HISTORY_CSV_COLUMNS = (
    "job_id", "user", "kind", "state", "zone", "submitted_at", "started_at", "finished_at", "duration_s",
    "gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh", "methods", "emissions_g", "intensity_g_per_kwh",
    "carbon_source", "counterfactual_emissions_g", "saving_g",
)


def _csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return out.getvalue()


def history_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per job, raw figures (J, kWh, g) and ISO times; methods joined with ``+``."""
    return _csv(HISTORY_CSV_COLUMNS, (
        ["+".join(row.get("methods") or ()) if k == "methods" else _blank(row.get(k)) for k in HISTORY_CSV_COLUMNS]
        for row in rows))


def groups_csv(groups: Sequence[Mapping[str, Any]], by: str) -> str:
    headers = (by, "jobs", *SUM_KEYS, "methods", "counterfactual_emissions_g", "saving_g", "saving_jobs")
    return _csv(headers, (
        ["+".join(g.get("methods") or ()) if k == "methods" else _blank(g.get(k)) for k in headers] for g in groups))


def history_json(history: Mapping[str, Any]) -> str:
    return json.dumps(history, indent=2)


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _codecarbon_time(iso: str | None) -> str:
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def codecarbon_rows(rows: Iterable[Mapping[str, Any]], project_name: str = "wattsched") -> list[dict[str, Any]]:
    """History rows as CodeCarbon ``EmissionsData`` records, one per job that has energy.

    ``run_id`` is the job id and ``experiment_id`` its kind; ``region`` is the grid zone (no country is guessed
    from it: CodeCarbon's country columns stay empty). Power columns are averages over the job's duration.
    """
    records = []
    for row in rows:
        if row.get("energy_j") is None:
            continue
        duration = row.get("duration_s") or 0.0
        emissions_kg = None if row.get("emissions_g") is None else row["emissions_g"] / 1000.0
        gpu_j, cpu_j = row.get("gpu_energy_j") or 0.0, row.get("cpu_energy_j") or 0.0
        records.append({
            "timestamp": _codecarbon_time(row.get("finished_at") or row.get("started_at")),
            "project_name": project_name, "run_id": row["job_id"], "experiment_id": row.get("kind") or "",
            "duration": duration, "emissions": emissions_kg,
            "emissions_rate": emissions_kg / duration if emissions_kg is not None and duration > 0 else 0.0,
            "cpu_power": cpu_j / duration if duration > 0 else 0.0,
            "gpu_power": gpu_j / duration if duration > 0 else 0.0, "ram_power": 0.0,
            "cpu_energy": cpu_j / J_PER_KWH, "gpu_energy": gpu_j / J_PER_KWH, "ram_energy": 0.0,
            "energy_consumed": (gpu_j + cpu_j) / J_PER_KWH,
            "country_name": "", "country_iso_code": "", "region": row.get("zone") or "", "cloud_provider": "",
            "cloud_region": "", "os": platform.platform(), "python_version": platform.python_version(),
            "codecarbon_version": "", "cpu_count": "", "cpu_model": "", "gpu_count": row.get("gpus") or "",
            "gpu_model": "", "longitude": "", "latitude": "", "ram_total_size": "", "tracking_mode": "process",
            "on_cloud": "N", "pue": 1.0,
            "wattsched_methods": "+".join(row.get("methods") or ()) or "unknown",
        })
    return records


def codecarbon_csv(rows: Iterable[Mapping[str, Any]], project_name: str = "wattsched") -> str:
    """A CodeCarbon-compatible ``emissions.csv`` of the jobs' energy and emissions."""
    headers = (*CODECARBON_COLUMNS, "wattsched_methods")
    return _csv(headers, ([_blank(r[k]) for k in headers] for r in codecarbon_rows(rows, project_name)))

"""Energy history as aggregates and files: groups per user, kind, zone or day; CSV, JSON and CodeCarbon's
``emissions.csv``.

Pure functions over history rows (the dicts ``GET /v1/history`` serves), so the daemon and the CLI share them
and the client side stays light (no sqlalchemy, no pandas).

Savings: each row may carry ``counterfactual_emissions_g``, what the job would have emitted under the fifo
counterfactual (started at submission, full power). A saving is ``counterfactual - actual``; where no
counterfactual is known it is None ("n/a"), never zero. Both are modelled, not measured, and say so
(``saving_basis``: ``modelled``).

Figures obtained by different methods are never summed as one: groups are split by the jobs' ``methods`` (a
simulated GPU figure and a measured one land in different groups), and ``totals`` gives one entry per method
in ``by_method``, with top-level sums only where every job's energy was obtained the same way. Unknowns are
counted, not summed as zeros: ``emissions_unknown_jobs`` and ``energy_unknown_jobs`` say how many jobs a sum
leaves out.
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
ENERGY_KEYS = ("gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh")
SUM_KEYS = (*ENERGY_KEYS, "emissions_g")
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


def methods_key(row: Mapping[str, Any]) -> str:
    """How a row's energy was obtained, as one label ("estimate+simulated"); "" when it has no energy."""
    return "+".join(row.get("methods") or ()) if row.get("energy_j") is not None else ""


def sums(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sums over rows whose energy was obtained the same way (callers split by ``methods_key`` first).

    jobs; energies (J, kWh) over the jobs that have energy (None when none has); emissions (g) over the jobs
    whose emissions are known (None when none is), and how many are not; the fifo counterfactual and the
    saving over the ``saving_jobs`` that have one (None when none has), labelled modelled.
    """
    metered = [r for r in rows if r.get("energy_j") is not None]
    known = [r for r in rows if r.get("emissions_g") is not None]
    saved = [r for r in rows if r.get("saving_g") is not None]
    out: dict[str, Any] = {"jobs": len(rows), "methods": list(rows[0].get("methods") or ()) if metered else []}
    for key in ENERGY_KEYS:
        out[key] = sum(r.get(key) or 0.0 for r in metered) if metered else None
    out["energy_unknown_jobs"] = len(rows) - len(metered)
    out["emissions_g"] = sum(r["emissions_g"] for r in known) if known else None
    out["emissions_unknown_jobs"] = len(rows) - len(known)
    out["counterfactual_emissions_g"] = sum(r["counterfactual_emissions_g"] for r in saved) if saved else None
    out["saving_g"] = sum(r["saving_g"] for r in saved) if saved else None
    out["saving_jobs"] = len(saved)
    out["saving_basis"] = MODELLED if saved else None
    return out


def _by_methods(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    split: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        split.setdefault(methods_key(row), []).append(row)
    return split


def aggregate(rows: Iterable[Mapping[str, Any]], by: str) -> list[dict[str, Any]]:
    """Sums per group and per way the energy was obtained, sorted by group then methods (see ``sums``): a group
    whose jobs were metered differently (simulated and measured, say) is one entry per method, never one sum."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_key(row, by), []).append(row)
    return [{by: key, **sums(split)}
            for key in sorted(groups) for _, split in sorted(_by_methods(groups[key]).items())]


def totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``totals`` of a history answer: ``by_method``, the sums per way the energy was obtained (see
    ``sums``; jobs without energy are an entry with no methods); and at the top level the jobs, how many have
    unknown energy or emissions, and the sums themselves only when every job with energy was metered the same
    way (else None, with ``mixed_methods`` true: add up only figures of one method)."""
    split = _by_methods(rows)
    by_method = [sums(split[key]) for key in sorted(split)]
    metered = [g for g in by_method if g["methods"]]
    out: dict[str, Any] = {"jobs": len(rows), "by_method": by_method, "mixed_methods": len(metered) > 1}
    one = metered[0] if len(metered) == 1 else None
    for key in (*SUM_KEYS, "counterfactual_emissions_g", "saving_g"):
        out[key] = one[key] if one else (0.0 if not rows and key in SUM_KEYS else None)
    out["saving_jobs"] = one["saving_jobs"] if one else 0
    out["saving_basis"] = one["saving_basis"] if one else None
    out["energy_unknown_jobs"] = sum(1 for r in rows if r.get("energy_j") is None)
    out["emissions_unknown_jobs"] = sum(1 for r in rows if r.get("emissions_g") is None)
    return out


# --- files ----------------------------------------------------------------------------------------------

HISTORY_CSV_COLUMNS = (
    "job_id", "user", "kind", "state", "zone", "submitted_at", "started_at", "finished_at", "duration_s",
    "gpu_energy_j", "cpu_energy_j", "energy_j", "energy_kwh", "methods", "emissions_g", "intensity_g_per_kwh",
    "carbon_source", "counterfactual_emissions_g", "saving_g", "saving_basis", "counterfactual_model",
    "power_cap_modes",
)
_LISTS = ("methods", "power_cap_modes")  # joined with "+" in CSV


def _csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return out.getvalue()


def history_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per job, raw figures (J, kWh, g) and ISO times; methods and cap modes joined with ``+``."""
    return _csv(HISTORY_CSV_COLUMNS, (
        ["+".join(row.get(k) or ()) if k in _LISTS else _blank(row.get(k)) for k in HISTORY_CSV_COLUMNS]
        for row in rows))


def groups_csv(groups: Sequence[Mapping[str, Any]], by: str) -> str:
    """One line per group and method (see ``aggregate``)."""
    headers = (by, "jobs", *SUM_KEYS, "methods", "energy_unknown_jobs", "emissions_unknown_jobs",
               "counterfactual_emissions_g", "saving_g", "saving_jobs", "saving_basis")
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

"""Carbon-intensity traces from CSV files, in every shape the simulation contract (simulation.md) accepts.

A trace is two numpy arrays: ``unix_s`` (float64, strictly increasing) and ``g_per_kwh`` (float64, >= 0). The
signal is piecewise constant: a value holds from its timestamp until the next row's (through any gap), and the
first value holds before the first row. Shapes recognised by header name (case-insensitive, BOM tolerated):

- ``timestamp,carbon_intensity`` (the project's own; the timestamp may be ISO 8601 or Unix seconds);
- ``Time,Carbon Intensity`` (the "Let's Wait Awhile" data);
- Electricity Maps exports: ``Datetime (UTC)`` with ``Carbon Intensity gCO₂eq/kWh (LCA)`` or ``(direct)``;
- Electricity Maps API dumps: ``datetime`` or ``zone_datetime`` with ``carbon_intensity_avg``.

When both ``zone_datetime`` and ``timestamp`` are present, ``zone_datetime`` is the time (``timestamp`` is when the
row was scraped). Timestamps without a zone are UTC. Errors name the file, the line and the field.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from scheduler.errors import CarbonTraceError

# Time columns in order of preference (lower-cased header names).
_TIME_COLUMNS = ("zone_datetime", "datetime (utc)", "datetime", "time", "timestamp")
_VALUE_COLUMNS = ("carbon_intensity", "carbon intensity", "carbon_intensity_avg")
_EXPORT_VALUE = "carbon intensity gco₂eq/kwh ({basis})"
BASES = ("lca", "direct")


def load_carbon_trace(path: Path | str, basis: str = "lca") -> tuple[np.ndarray, np.ndarray]:
    """The trace in ``path`` as ``(unix_s, g_per_kwh)``; ``basis`` picks LCA or direct in Electricity Maps exports."""
    path = Path(path)
    if basis not in BASES:
        raise ValueError(f"basis must be one of {', '.join(BASES)}, not {basis!r}")
    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # utf-8-sig drops a byte-order mark
    except OSError as exc:
        raise CarbonTraceError(path, None, None, f"cannot read the file ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise CarbonTraceError(path, 1, None, "the file is empty; expected a header row")
        time_col, value_col = _pick_columns(path, [h.strip().lower() for h in header], basis, header)
        times: list[float] = []
        values: list[float] = []
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise CarbonTraceError(path, line, None, f"expected {len(header)} fields, found {len(row)}")
            t = _parse_time(path, line, header[time_col], row[time_col])
            v = _parse_value(path, line, header[value_col], row[value_col])
            if times and t <= times[-1]:
                problem = "duplicate timestamp" if t == times[-1] else "rows are not sorted by time"
                raise CarbonTraceError(path, line, header[time_col], f"{problem} ({row[time_col]!r})")
            times.append(t)
            values.append(v)
    if not times:
        raise CarbonTraceError(path, 2, None, "no data rows after the header")
    return np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64)


def _pick_columns(path: Path, names: list[str], basis: str, header: list[str]) -> tuple[int, int]:
    time_col = next((names.index(c) for c in _TIME_COLUMNS if c in names), None)
    export = _EXPORT_VALUE.format(basis=basis)
    value_col = names.index(export) if export in names else next(
        (names.index(c) for c in _VALUE_COLUMNS if c in names), None)
    if time_col is None or value_col is None:
        missing = "a time column" if time_col is None else "a carbon-intensity column"
        raise CarbonTraceError(path, 1, None, f"no {missing} among {header}; expected one of the shapes "
                               "timestamp,carbon_intensity | Time,Carbon Intensity | Datetime (UTC),Carbon "
                               "Intensity gCO₂eq/kWh (LCA) | zone_datetime,carbon_intensity_avg")
    return time_col, value_col


def _parse_time(path: Path, line: int, field: str, text: str) -> float:
    text = text.strip()
    try:
        return float(text)  # Unix seconds
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise CarbonTraceError(path, line, field, f"not a timestamp: {text!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.timestamp()


def _parse_value(path: Path, line: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CarbonTraceError(path, line, field, f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise CarbonTraceError(path, line, field, f"intensity must be a finite number >= 0, not {text!r}")
    return value

"""A carbon trace CSV (any shape of simulation.md, read by :func:`scheduler.carbon.trace_file.load_carbon_trace`).

The trace's values are taken as the zone's actuals, and its future values as a perfect forecast, which is what
replaying a recorded grid means. ``offset_s`` shifts the trace in time (to replay last year's trace today). The
file is re-read when it changes; a file the loader rejects (garbage, duplicate or unsorted lines) is a
BadResponse naming the file and the line.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from scheduler.carbon.providers.base import (
    ACTUAL,
    FORECAST,
    IntensityPoint,
    floor_time,
)
from scheduler.carbon.trace_file import load_carbon_trace
from scheduler.errors import BadResponse, CarbonTraceError, ProviderUnavailable

FORECAST_ISSUE_STEP_S = 3600.0


class TraceProvider:
    """The intensity recorded in one CSV trace file; the region id is ignored (one file, one zone)."""

    def __init__(self, path: Path | str, basis: str = "lca", offset_s: float = 0.0):
        self.path = Path(path)
        self.basis = basis
        self.offset_s = offset_s
        self.source = f"trace:{self.path.name}"
        self._loaded: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"TraceProvider({str(self.path)!r}, basis={self.basis!r}, offset_s={self.offset_s:g})"

    def actuals(self, region: str, as_of: datetime, window_s: float) -> list[IntensityPoint]:
        unix_s, g_per_kwh = self._trace()
        end_s = as_of.timestamp()
        first = max(0, int(np.searchsorted(unix_s, end_s - window_s, side="right")) - 1)
        last = int(np.searchsorted(unix_s, end_s, side="right"))
        return [IntensityPoint(at, value, ACTUAL, at)
                for at, value in _points(unix_s[first:last], g_per_kwh[first:last])]

    def forecast(self, region: str, as_of: datetime, horizon_s: float) -> list[IntensityPoint]:
        unix_s, g_per_kwh = self._trace()
        start_s = as_of.timestamp()
        first = max(0, int(np.searchsorted(unix_s, start_s, side="right")) - 1)
        last = int(np.searchsorted(unix_s, start_s + horizon_s, side="right"))
        # Issued on the hour, so refreshing within the hour does not store the same forecast again.
        issued_at = min(as_of, floor_time(as_of, FORECAST_ISSUE_STEP_S))
        return [IntensityPoint(at, value, FORECAST, issued_at)
                for at, value in _points(unix_s[first:last], g_per_kwh[first:last])]

    def _trace(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            stat = self.path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
            if self._loaded is None or self._loaded[0] != version:
                unix_s, g_per_kwh = load_carbon_trace(self.path, self.basis)
                self._loaded = (version, unix_s + self.offset_s, g_per_kwh)
        except CarbonTraceError as exc:
            self._loaded = None
            raise BadResponse(self.source, str(exc)) from None
        except OSError as exc:
            self._loaded = None
            raise ProviderUnavailable(self.source, f"cannot read {self.path} ({exc.strerror})") from None
        return self._loaded[1], self._loaded[2]


def _points(unix_s: np.ndarray, g_per_kwh: np.ndarray) -> list[tuple[datetime, float]]:
    return [(datetime.fromtimestamp(float(t), tz=timezone.utc), float(v)) for t, v in zip(unix_s, g_per_kwh)]
